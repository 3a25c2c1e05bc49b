import crypto from "node:crypto";
import type { ApiSettingsSchema } from "moleculer-web";
import { io as connect, type Socket } from "socket.io-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ChatmeshNode } from "../../node";
import { startSimulator, type SimulatorHandle } from "../../simulator/simulator";
import { type Alias, EVENT_FIELDS, type HttpCase, httpCorpus, nested, socketCorpus } from "../helpers/fuzz-corpus";
import { apiClient, signUp, type ApiClient, type Session } from "../helpers/http";
import { clusterEnv, createTestDatabase, queryDb, uniqueNamespace, type TestDatabase } from "../helpers/infra";
import { simulatorProviders, startTestNode } from "../helpers/nodes";

// A seeded corpus of malformed input over every HTTP route of the gateway's alias table and every
// socket.io client event: no input may produce a 5xx or an INTERNAL_ERROR ack, every refusal has
// the public error shape, and the node still serves afterwards. The same seed gives the same corpus.
const CONCURRENCY = 6;

let sim: SimulatorHandle;
let db: TestDatabase;
let node: ChatmeshNode & { baseUrl: string };
let services: ChatmeshNode | undefined;
let api: ApiClient;
let admin: Session;
let victim: Session;
const owned: Record<"conversation" | "generation" | "key", string> = { conversation: "", generation: "", key: "" };
const sockets: Socket[] = [];

/** "METHOD /full/path" of every alias the gateway declares. */
function gatewayAliases(): Alias[] {
	const { routes } = node.broker.getLocalService("gateway").settings as ApiSettingsSchema;
	return (routes ?? []).flatMap(route =>
		Object.keys(route.aliases ?? {}).map(alias => {
			const [method, path] = alias.split(/\s+/);
			return { method, path: `${route.path ?? ""}/${path}`.replace(/\/+/g, "/"), openai: (route.path ?? "").startsWith("/v1") };
		})
	);
}

function validIdFor(path: string): string {
	if (path.includes("/admin/users/")) return victim.userId;
	if (path.includes("/generations/")) return owned.generation;
	if (path.includes("/keys/")) return owned.key;
	return owned.conversation;
}

async function send(c: HttpCase): Promise<{ status: number; body: unknown; text: string; headers: Headers }> {
	const method = c.headers["access-control-request-method"] ? "OPTIONS" : c.method;
	const res = await fetch(`${node.baseUrl}${c.path}`, { method, headers: c.headers, body: method === "GET" || method === "OPTIONS" ? undefined : c.body });
	const text = await res.text();
	let body: unknown;
	try {
		body = text ? JSON.parse(text) : undefined;
	} catch {
		body = undefined;
	}
	return { status: res.status, body, text, headers: res.headers };
}

/** Runs `work` over `items` with a fixed number in flight. */
async function pool<T, R>(items: readonly T[], width: number, work: (item: T) => Promise<R>): Promise<R[]> {
	const results: R[] = new Array(items.length);
	let next = 0;
	await Promise.all(
		Array.from({ length: width }, async () => {
			while (next < items.length) {
				const i = next++;
				results[i] = await work(items[i]);
			}
		})
	);
	return results;
}

const UPPER_TYPE = /^[A-Z][A-Z0-9_]*$/;

function errorShapeProblem(c: HttpCase, status: number, body: unknown): string | undefined {
	if (c.openai) {
		const e = (body as { error?: { message?: unknown; type?: unknown; code?: unknown } } | undefined)?.error;
		if (!e || typeof e.message !== "string" || typeof e.type !== "string" || typeof e.code !== "string" || !UPPER_TYPE.test(e.code))
			return "not an OpenAI error";
		return undefined;
	}
	const e = body as { name?: unknown; message?: unknown; code?: unknown; type?: unknown } | undefined;
	if (!e || typeof e.name !== "string" || typeof e.message !== "string" || e.code !== status || typeof e.type !== "string" || !UPPER_TYPE.test(e.type))
		return "not the public error shape";
	return undefined;
}

function open(token: string): Promise<Socket> {
	const socket = connect(node.baseUrl, { auth: { token }, transports: ["websocket"], reconnection: false });
	sockets.push(socket);
	return new Promise((resolve, reject) => {
		socket.once("connect", () => resolve(socket));
		socket.once("connect_error", reject);
	});
}

beforeAll(async () => {
	sim = await startSimulator({ outputTokens: 3 });
	db = await createTestDatabase("fuzz");
	const generous = { points: 100_000, durationS: 60 };
	// Two nodes on NATS: every action call the gateway makes crosses the transporter's serializer.
	const env = {
		...clusterEnv(uniqueNamespace("fuzz"), db.url),
		LLM_PROVIDERS: simulatorProviders(sim, ["sim-small"]),
		RATE_LIMITS: JSON.stringify({
			perUser: { chat: generous, auth: generous, default: generous },
			perIp: { chat: generous, auth: generous, default: generous }
		})
	};
	services = await startTestNode({ ...env, SERVICES: "user,conversation,llm,quota,moderation,tool,jobs", NODE_ID: "fuzz-services" });
	node = await startTestNode({ ...env, SERVICES: "gateway", NODE_ID: "fuzz-gateway" });
	await node.broker.waitForServices(["user", "conversation", "llm", "quota", "moderation", "tool"], 20_000);
	api = apiClient(node.baseUrl);
	const user = await signUp(api, "fuzz-admin");
	victim = await signUp(api, "fuzz-victim");
	await queryDb(db.url, "UPDATE users SET roles = ARRAY['user','admin'] WHERE id = $1", [user.userId]);
	const login = await api.post<{ accessToken: string; refreshToken: string }>("/api/auth/login", { body: { email: user.email, password: user.password } });
	admin = { ...user, accessToken: login.body.accessToken, refreshToken: login.body.refreshToken };
	const conv = await api.post<{ id: string }>("/api/conversations", { token: admin.accessToken, body: { title: "fuzzed" } });
	const sent = await api.post<{ generationId: string }>(`/api/conversations/${conv.body.id}/messages`, { token: admin.accessToken, body: { content: "hi" } });
	const key = await api.post<{ id: string }>("/api/keys", { token: admin.accessToken, body: { name: "fuzz" } });
	Object.assign(owned, { conversation: conv.body.id, generation: sent.body.generationId, key: key.body.id });
}, 60_000);

afterAll(async () => {
	for (const s of sockets) s.disconnect();
	await node?.stop();
	await services?.stop();
	await sim?.close();
	await db?.drop();
});

describe("fuzzing the edge", () => {
	it("answers every malformed HTTP request with a 4xx in the public error shape", async () => {
		const corpus = httpCorpus(gatewayAliases(), admin.accessToken, validIdFor);
		const results = await pool(corpus, CONCURRENCY, async c => ({ c, ...(await send(c)) }));
		const byStatus = new Map<number, number>();
		for (const r of results) byStatus.set(r.status, (byStatus.get(r.status) ?? 0) + 1);
		console.log(
			`fuzz: ${results.length} HTTP requests over ${gatewayAliases().length} routes; by status:`,
			Object.fromEntries([...byStatus].sort(([a], [b]) => a - b))
		);
		const serverErrors = results.filter(r => r.status >= 500).map(r => `${r.c.method} ${r.c.path.slice(0, 120)} → ${r.status} ${r.text.slice(0, 200)}`);
		expect(serverErrors).toEqual([]);
		const badShapes = results
			.filter(r => r.status >= 400 && r.status < 500)
			.flatMap(r => {
				const problem = errorShapeProblem(r.c, r.status, r.body);
				return problem ? [`${r.c.method} ${r.c.path.slice(0, 120)} → ${r.status} ${problem}: ${r.text.slice(0, 200)}`] : [];
			});
		expect(badShapes).toEqual([]);
		// Every JSON answer says it is JSON and only JSON.
		const sniffable = results.filter(r => r.headers.get("content-type")?.includes("json") && r.headers.get("x-content-type-options") !== "nosniff");
		expect(sniffable.map(r => `${r.c.method} ${r.c.path.slice(0, 120)} → ${r.status}`)).toEqual([]);
		expect(results.length).toBeGreaterThan(1000);
	}, 120_000);

	it("acknowledges every malformed socket.io event without an internal error", async () => {
		const socket = await open(admin.accessToken);
		const corpus = socketCorpus();
		const acks = await pool(corpus, CONCURRENCY, async ({ event, args }) => {
			try {
				return { event, ack: (await socket.timeout(10_000).emitWithAck(event, ...args)) as { error?: { code?: unknown; message?: unknown } } };
			} catch (err) {
				return { event, ack: { error: { code: `NO_ACK ${(err as Error).message}` } } };
			}
		});
		const byCode = new Map<string, number>();
		for (const { ack } of acks) {
			const code = ack?.error ? String(ack.error.code) : "ok";
			byCode.set(code, (byCode.get(code) ?? 0) + 1);
		}
		console.log(`fuzz: ${acks.length} socket.io events; acks by code:`, Object.fromEntries(byCode));
		const bad = acks.filter(
			({ ack }) => ack?.error && (typeof ack.error.code !== "string" || !UPPER_TYPE.test(ack.error.code) || ack.error.code === "INTERNAL_ERROR")
		);
		expect(bad.map(b => `${b.event}: ${JSON.stringify(b.ack).slice(0, 200)}`)).toEqual([]);
		expect(socket.connected).toBe(true);
		// Events without an ack go nowhere, and take the connection with them neither.
		for (const event of Object.keys(EVENT_FIELDS)) socket.emit(event, nested(1500));
		expect((await socket.timeout(10_000).emitWithAck("generation:cancel", { generationId: crypto.randomUUID() })) as unknown).toMatchObject({
			error: { code: "NOT_FOUND" }
		});
	}, 120_000);

	it("still serves afterwards", async () => {
		expect((await fetch(`${node.baseUrl}/health`)).status).toBe(200);
		const me = await api.get<{ id: string }>("/api/me", { token: admin.accessToken });
		expect(me.status).toBe(200);
		const conv = await api.post<{ id: string }>("/api/conversations", { token: admin.accessToken, body: { title: "after the storm" } });
		expect(conv.status).toBe(201);
		const sent = await api.post(`/api/conversations/${conv.body.id}/messages`, { token: admin.accessToken, body: { content: "still there?" } });
		expect(sent.status).toBe(202);
		const fresh = await open(admin.accessToken);
		expect(fresh.connected).toBe(true);
	});
});
