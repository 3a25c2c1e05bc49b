import crypto from "node:crypto";
import { gzipSync } from "node:zlib";
import type { ApiRouteSchema } from "moleculer-web";
import { io as connect, type Socket } from "socket.io-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ChatmeshNode } from "../../node";
import { startSimulator, type SimulatorHandle } from "../../simulator/simulator";
import { apiClient, signUp, type ApiClient, type Session } from "../helpers/http";
import { clusterEnv, createTestDatabase, queryDb, uniqueNamespace, type TestDatabase } from "../helpers/infra";
import { simulatorProviders, startTestNode } from "../helpers/nodes";

// A seeded corpus of malformed input over every HTTP route of the gateway's alias table and every
// socket.io client event: no input may produce a 5xx or an INTERNAL_ERROR ack, every refusal has
// the public error shape, and the node still serves afterwards. The same seed gives the same corpus.
const SEED = 0x5eed_c4a7;
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

/** mulberry32: small, seedable, good enough to pick cases. */
function prng(seed: number): () => number {
	let a = seed >>> 0;
	return () => {
		a = (a + 0x6d2b79f5) >>> 0;
		let t = a;
		t = Math.imul(t ^ (t >>> 15), t | 1);
		t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
		return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
	};
}
const rand = prng(SEED);
const pick = <T>(items: readonly T[]): T => items[Math.floor(rand() * items.length)];
/** A uuid from the seeded generator, so the corpus is the same on every run. */
const seededUuid = () => {
	const hex = Array.from({ length: 32 }, () => Math.floor(rand() * 16).toString(16)).join("");
	return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
};

const deepArray = (depth: number) => `${"[".repeat(depth)}1${"]".repeat(depth)}`;
const deepObject = (depth: number) => `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`;
const nested = (depth: number): unknown => (depth === 0 ? "leaf" : { a: nested(depth - 1) });
const b64 = (value: unknown) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

const BAD_CURSORS = [
	"1",
	"garbage!",
	b64(["1", seededUuid()]),
	b64(["March 7", seededUuid()]),
	b64(["+275760-09-13T00:00:00.000Z", seededUuid()]),
	b64(["2026-02-31T00:00:00.000Z", seededUuid()]),
	b64(["0000-01-01T00:00:00.000Z", seededUuid()]),
	b64(["2026-01-01T00:00:00.000Z", "not-a-uuid"]),
	b64(["2026-01-01T00:00:00Z", seededUuid()]),
	`${b64(["2026-01-01T00:00:00.000Z", seededUuid()])}=`,
	b64("["),
	b64({ at: "2026-01-01T00:00:00.000Z" }),
	b64([1, 2, 3])
];

const NASTY_VALUES: readonly unknown[] = [
	null,
	true,
	0,
	-1,
	1.5,
	1e308,
	2 ** 53 + 1,
	"",
	" ",
	"\0",
	"a\u0000b",
	"\ud800",
	"x\udc00y",
	"\udbff\udfff",
	"x".repeat(300),
	"é".repeat(40_000),
	[],
	[1, "a", null],
	{},
	{ $ne: null },
	"' OR 1=1 --",
	"%00",
	"../../etc/passwd",
	"2026-13-45",
	"not-a-uuid",
	nested(70),
	nested(10),
	...BAD_CURSORS.slice(0, 4)
];

const FIELDS = [
	"title",
	"content",
	"model",
	"email",
	"password",
	"refreshToken",
	"name",
	"roles",
	"tokensLimit",
	"period",
	"conversationId",
	"generationId",
	"after",
	"cursor",
	"limit",
	"messages",
	"stream",
	"conversation_id",
	"token",
	"max_tokens",
	"a\u0000b",
	"\ud800"
];

function randomObject(): Record<string, unknown> {
	const body: Record<string, unknown> = {};
	const n = 1 + Math.floor(rand() * 4);
	for (let i = 0; i < n; i++) body[pick(FIELDS)] = pick(NASTY_VALUES);
	return body;
}

interface HttpCase {
	method: string;
	path: string;
	headers: Record<string, string>;
	body?: string | Buffer;
	/** Routes whose errors are in OpenAI's shape. */
	openai: boolean;
}

const RAW_BODIES = [
	"",
	"{",
	"}",
	"null",
	"[]",
	"[1,2]",
	'"text"',
	"123",
	'{"a":}',
	"{'single': 1}",
	"\u0000",
	deepArray(6000),
	deepObject(6000),
	deepArray(65),
	deepObject(64),
	JSON.stringify({ content: "x".repeat(1_100_000) })
];

const QUERIES = [
	...BAD_CURSORS.map(c => `?cursor=${encodeURIComponent(c)}`),
	"?cursor=%00",
	"?cursor=%ED%A0%80",
	"?limit=-1",
	"?limit=abc",
	"?limit=1e9",
	"?limit=%00",
	"?after=x",
	"?a[b][c][d][e][f][g][h]=1",
	"?cursor[]=1&cursor[]=2",
	"?cursor[a]=1",
	`?cursor=${"A".repeat(5000)}`
];

const ID_VARIANTS = ["not-a-uuid", "%00", "%ED%A0%80", "x".repeat(3000), "1", "%2e%2e", "%F0%9F%98%80", "00000000-0000-0000-0000-00000000000g"];

const ENCODINGS: Array<{ headers: Record<string, string>; body: string | Buffer }> = [
	{ headers: { "content-encoding": "gzip" }, body: '{"title":"plain"}' },
	{ headers: { "content-encoding": "deflate" }, body: '{"title":"plain"}' },
	{ headers: { "content-encoding": "br" }, body: '{"title":"plain"}' },
	{ headers: { "content-encoding": "x-unknown" }, body: '{"title":"plain"}' },
	{ headers: { "content-encoding": "gzip, identity" }, body: '{"title":"plain"}' },
	{ headers: { "content-encoding": "gzip" }, body: gzipSync('{"title":"zipped"}') },
	{ headers: { "content-type": "application/json; charset=utf-16" }, body: '{"title":"x"}' },
	{ headers: { "content-type": "application/json; charset=klingon" }, body: '{"title":"x"}' },
	{ headers: { "content-type": "text/plain" }, body: '{"title":"x"}' },
	{ headers: { "content-type": "application/x-www-form-urlencoded" }, body: "title=x&content=%00" }
];

/** "METHOD /full/path" of every alias the gateway declares. */
function gatewayAliases(): Array<{ method: string; path: string; openai: boolean }> {
	const gateway = node.broker.getLocalService("gateway") as unknown as { settings: { routes: ApiRouteSchema[] } };
	return gateway.settings.routes.flatMap(route =>
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

function httpCorpus(): HttpCase[] {
	const cases: HttpCase[] = [];
	const auth = { authorization: `Bearer ${admin.accessToken}` };
	const json = { ...auth, "content-type": "application/json" };
	for (const { method, path, openai } of gatewayAliases()) {
		const withId = (id: string) => path.replace(":id", id);
		const base = withId(validIdFor(path));
		const add = (p: string, headers: Record<string, string>, body?: string | Buffer) => cases.push({ method, path: p, headers, body, openai });
		for (const id of [...ID_VARIANTS, seededUuid()]) add(withId(id), json, "{}");
		for (const query of QUERIES) add(`${base}${query}`, auth);
		for (const raw of RAW_BODIES) add(base, json, raw);
		for (const { headers, body } of ENCODINGS) add(base, { ...json, ...headers }, body);
		for (let i = 0; i < 24; i++) add(base, json, JSON.stringify(rand() < 0.85 ? randomObject() : [randomObject()]));
		add(base, { authorization: "Basic abc" });
		add(base, { authorization: "Bearer a b" });
		add(base, { authorization: `Bearer ${"x".repeat(5000)}` });
		add(base, {});
		add(base, { ...json, origin: "https://elsewhere.example", "access-control-request-method": method });
	}
	return cases;
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

const EVENT_FIELDS: Record<string, string[]> = {
	"chat:send": ["conversationId", "content", "model"],
	"generation:subscribe": ["generationId", "after"],
	"generation:cancel": ["generationId"],
	"auth:refresh": ["token"]
};

function socketCorpus(): Array<{ event: string; args: unknown[] }> {
	const cases: Array<{ event: string; args: unknown[] }> = [];
	for (const [event, fields] of Object.entries(EVENT_FIELDS)) {
		for (const payload of [undefined, null, 1, "text", [], [{}], true, nested(1500), nested(65), nested(63), {}, Buffer.from("binary")])
			cases.push({ event, args: [payload] });
		cases.push({ event, args: [{}, "second", { third: "\0" }] });
		cases.push({ event, args: [{ [fields[0]]: "x" }, "second"] });
		cases.push({ event, args: [{ [fields[0]]: "x" }, 42, { third: true }] });
		cases.push({ event, args: [] });
		for (let i = 0; i < 40; i++) {
			const payload: Record<string, unknown> = {};
			for (const field of fields) if (rand() < 0.8) payload[field] = pick(NASTY_VALUES);
			if (rand() < 0.2) payload[pick(FIELDS)] = pick(NASTY_VALUES);
			cases.push({ event, args: [payload] });
		}
	}
	return cases;
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
	services = await startTestNode({ ...env, SERVICES: "user,conversation,llm,quota,moderation,tool", NODE_ID: "fuzz-services" });
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
		const corpus = httpCorpus();
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
