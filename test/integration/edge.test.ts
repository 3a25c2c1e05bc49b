import { gzipSync } from "node:zlib";
import { io as connect, type Socket } from "socket.io-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeCursor } from "../../lib/cursor";
import type { ChatmeshNode } from "../../node";
import { startSimulator, type SimulatorHandle } from "../../simulator/simulator";
import { apiClient, signUp, type ApiClient, type Session } from "../helpers/http";
import { createTestDatabase, TEST_REDIS_URL, uniqueNamespace, type TestDatabase } from "../helpers/infra";
import { simulatorProviders, startTestNode } from "../helpers/nodes";

// What the gateway checks before any action runs, the same on every route and socket event:
// nesting depth, strings PostgreSQL can store, strict cursors, uncompressed bodies; and the
// headers every answer carries (nosniff, no-store on sign-in, CORS for the configured origins).
const ALLOWED_ORIGIN = "https://chat.example.com";
let sim: SimulatorHandle;
let db: TestDatabase;
let node: ChatmeshNode & { baseUrl: string };
let api: ApiClient;
let user: Session;
let socket: Socket;

beforeAll(async () => {
	sim = await startSimulator({ outputTokens: 3 });
	db = await createTestDatabase("edge");
	node = await startTestNode({
		DATABASE_URL: db.url,
		REDIS_URL: TEST_REDIS_URL,
		NAMESPACE: uniqueNamespace("edge"),
		LLM_PROVIDERS: simulatorProviders(sim, ["sim-small"]),
		CORS_ORIGINS: ALLOWED_ORIGIN
	});
	api = apiClient(node.baseUrl);
	user = await signUp(api, "edge");
	socket = connect(node.baseUrl, { auth: { token: user.accessToken }, transports: ["websocket"], reconnection: false });
	await new Promise((resolve, reject) => {
		socket.once("connect", () => resolve(undefined));
		socket.once("connect_error", reject);
	});
});
afterAll(async () => {
	socket?.disconnect();
	await node?.stop();
	await sim?.close();
	await db?.drop();
});

const nested = (depth: number): unknown => (depth === 0 ? "leaf" : { a: nested(depth - 1) });

describe("string content", () => {
	it.each([
		["a NUL in a new title", "POST", () => "/api/conversations", { title: "a\u0000b" }, "title"],
		["a NUL in a renamed title", "PATCH", (id: string) => `/api/conversations/${id}`, { title: "a\u0000b" }, "title"],
		["a lone high surrogate in a title", "PATCH", (id: string) => `/api/conversations/${id}`, { title: "x\ud800" }, "title"],
		["a NUL in a message", "POST", (id: string) => `/api/conversations/${id}/messages`, { content: "hi\u0000" }, "content"],
		["a lone low surrogate in a message", "POST", (id: string) => `/api/conversations/${id}/messages`, { content: "\udc00hi" }, "content"],
		["a NUL in an API key name", "POST", () => "/api/keys", { name: "k\u0000" }, "name"],
		[
			"a NUL in an OpenAI message",
			"POST",
			() => "/v1/chat/completions",
			{ model: "sim-small", messages: [{ role: "user", content: "\u0000" }] },
			"messages[0].content"
		]
	])("refuses %s with VALIDATION_ERROR naming the field", async (_label, method, path, body, field) => {
		const conv = await api.post<{ id: string }>("/api/conversations", { token: user.accessToken, body: {} });
		const res = await api.request(method, path(conv.body.id), { token: user.accessToken, body });
		expect(res.status).toBe(422);
		const type = path("x").startsWith("/v1") ? (res.body as { error: { code: string } }).error.code : (res.body as { type: string }).type;
		expect(type).toBe("VALIDATION_ERROR");
		expect(JSON.stringify(res.body)).toContain(field);
	});

	it("refuses a NUL in a query string", async () => {
		const res = await api.get<{ type: string; data: Array<{ field: string }> }>("/api/conversations?cursor=%00", { token: user.accessToken });
		expect(res.status).toBe(422);
		expect(res.body.data[0].field).toBe("cursor");
	});

	it("keeps well-formed text, surrogate pairs included", async () => {
		const res = await api.post<{ title: string }>("/api/conversations", { token: user.accessToken, body: { title: "emoji 😀 ok" } });
		expect(res.status).toBe(201);
		expect(res.body.title).toBe("emoji 😀 ok");
	});

	it("refuses the same over socket.io, naming the field in the ack", async () => {
		const ack = await socket.timeout(5000).emitWithAck("chat:send", { content: "hi\u0000" });
		expect(ack).toMatchObject({ error: { code: "VALIDATION_ERROR", data: [{ field: "content" }] } });
	});
});

describe("nesting depth", () => {
	it("refuses a body nested deeper than 64 levels with 400 NESTING_TOO_DEEP", async () => {
		for (const raw of [`${"[".repeat(6000)}${"]".repeat(6000)}`, JSON.stringify({ title: nested(65) })]) {
			const res = await api.post("/api/conversations", { token: user.accessToken, rawBody: raw });
			expect(res.status).toBe(400);
			expect(res.body).toMatchObject({ code: 400, type: "NESTING_TOO_DEEP" });
		}
	});

	it("lets a 64-level body through to the action's own validation", async () => {
		const res = await api.post("/api/conversations", { token: user.accessToken, body: { title: nested(62) } });
		expect(res.body).toMatchObject({ type: "VALIDATION_ERROR" });
	});

	it("refuses a deep socket.io payload in the ack", async () => {
		const ack = await socket.timeout(5000).emitWithAck("generation:subscribe", nested(500));
		expect(ack).toMatchObject({ error: { code: "NESTING_TOO_DEEP" } });
		expect(socket.connected).toBe(true);
	});
});

describe("cursors", () => {
	it("accepts the cursor a page gave and refuses anything else with 400 INVALID_CURSOR", async () => {
		const conv = await api.post<{ id: string }>("/api/conversations", { token: user.accessToken, body: {} });
		for (const content of ["one", "two", "three"])
			await api.post(`/api/conversations/${conv.body.id}/messages`, { token: user.accessToken, body: { content } });
		const first = await api.get<{ nextCursor: string }>(`/api/conversations/${conv.body.id}/messages?limit=1`, { token: user.accessToken });
		expect(first.body.nextCursor).toEqual(expect.any(String));
		const next = await api.get(`/api/conversations/${conv.body.id}/messages?limit=1&cursor=${first.body.nextCursor}`, { token: user.accessToken });
		expect(next.status).toBe(200);

		const id = crypto.randomUUID();
		const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");
		const bad = [
			b64(["1", id]),
			b64(["March 7", id]),
			b64(["+275760-09-13T00:00:00.000Z", id]),
			b64(["2026-02-31T00:00:00.000Z", id]),
			b64(["2026-01-01T00:00:00Z", id]),
			b64(["0000-01-01T00:00:00.000Z", id]),
			b64(["2026-01-01T00:00:00.000Z", "nope"]),
			`${encodeCursor(new Date("2026-01-01T00:00:00.000Z"), id)}=`,
			"garbage"
		];
		for (const cursor of bad) {
			for (const path of [`/api/conversations/${conv.body.id}/messages`, "/api/conversations"]) {
				const res = await api.get(`${path}?cursor=${encodeURIComponent(cursor)}`, { token: user.accessToken });
				expect({ cursor, status: res.status, body: res.body }).toMatchObject({ cursor, status: 400, body: { code: 400, type: "INVALID_CURSOR" } });
			}
		}
	});
});

describe("content encodings", () => {
	it("refuses compressed or unknown-encoded bodies with 415 UNSUPPORTED_MEDIA_TYPE", async () => {
		const cases: Array<[string, string | Buffer]> = [
			["gzip", '{"title":"not really gzip"}'],
			["deflate", '{"title":"not really deflate"}'],
			["gzip", gzipSync('{"title":"really gzip"}')],
			["x-unknown", '{"title":"x"}']
		];
		for (const [encoding, body] of cases) {
			const res = await fetch(`${node.baseUrl}/api/conversations`, {
				method: "POST",
				headers: { authorization: `Bearer ${user.accessToken}`, "content-type": "application/json", "content-encoding": encoding },
				body
			});
			expect(res.status).toBe(415);
			expect(await res.json()).toMatchObject({ code: 415, type: "UNSUPPORTED_MEDIA_TYPE" });
		}
	});
});

describe("headers", () => {
	it("marks sign-in answers no-store, successes and refusals alike", async () => {
		const login = await api.post<{ refreshToken: string }>("/api/auth/login", { body: { email: user.email, password: user.password } });
		const refresh = await api.post("/api/auth/refresh", { body: { refreshToken: login.body.refreshToken } });
		const refused = await api.post("/api/auth/login", { body: { email: user.email, password: "wrong password here" } });
		const registered = await api.post("/api/auth/register", { body: { email: `n-${Date.now()}@example.test`, password: "a long enough password" } });
		expect([login.status, refresh.status, refused.status, registered.status]).toEqual([200, 200, 401, 201]);
		for (const res of [login, refresh, refused, registered]) expect(res.headers.get("cache-control")).toBe("no-store");
	});

	it("says nosniff on every JSON answer", async () => {
		const answers = [
			await api.get("/api/me", { token: user.accessToken }),
			await api.get("/api/me"),
			await api.get("/api/nothing-here", { token: user.accessToken }),
			await api.post("/api/conversations", { token: user.accessToken, rawBody: "{" }),
			await api.get("/health")
		];
		for (const res of answers) expect(res.headers.get("x-content-type-options")).toBe("nosniff");
	});

	it("answers a CORS preflight 204, allowing only the configured origin", async () => {
		const preflight = (origin: string) =>
			fetch(`${node.baseUrl}/api/conversations`, {
				method: "OPTIONS",
				headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" }
			});
		const allowed = await preflight(ALLOWED_ORIGIN);
		expect(allowed.status).toBe(204);
		expect(allowed.headers.get("access-control-allow-origin")).toBe(ALLOWED_ORIGIN);
		expect(allowed.headers.get("access-control-allow-methods")).toContain("POST");
		expect(allowed.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("authorization");

		const foreign = await preflight("https://evil.example");
		expect(foreign.status).toBe(204);
		expect(foreign.headers.get("access-control-allow-origin")).toBeNull();

		const call = await fetch(`${node.baseUrl}/api/me`, { headers: { origin: ALLOWED_ORIGIN, authorization: `Bearer ${user.accessToken}` } });
		expect(call.status).toBe(200);
		expect(call.headers.get("access-control-allow-origin")).toBe(ALLOWED_ORIGIN);
	});
});
