import { Redis } from "ioredis";
import { io as connect, type Socket } from "socket.io-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ChatmeshNode } from "../../node";
import { apiClient, signUp, type ApiClient } from "../helpers/http";
import { clusterEnv, createTestDatabase, queryDb, TEST_REDIS_URL, uniqueNamespace, type TestDatabase } from "../helpers/infra";
import { startTestNode } from "../helpers/nodes";

// socket.io credentials against the real PostgreSQL, Redis and NATS: a bad handshake token costs
// the address like a bad bearer token on HTTP, and a socket re-checks its credential before every
// event, so it stops even when the broadcast that closes it never reached its gateway.
const IP_LIMIT = 4;
let db: TestDatabase;
let node: ChatmeshNode & { baseUrl: string };
let api: ApiClient;
let namespace: string;
const sockets: Socket[] = [];

beforeAll(async () => {
	db = await createTestDatabase("socket_auth");
	namespace = uniqueNamespace("sockauth");
	node = await startTestNode({
		...clusterEnv(namespace, db.url),
		SERVICES: "gateway,user",
		// Each test speaks from its own address (X-Forwarded-For), so their budgets never meet.
		TRUST_PROXY: "true",
		RATE_LIMITS: JSON.stringify({ perIp: { default: { points: IP_LIMIT, durationS: 60 }, auth: { points: 1000, durationS: 60 } } })
	});
	api = apiClient(node.baseUrl);
});
afterAll(async () => {
	for (const s of sockets) s.disconnect();
	await node?.stop();
	await db?.drop();
});

function open(token: string, ip: string): Socket {
	const socket = connect(node.baseUrl, { auth: { token }, transports: ["websocket"], reconnection: false, extraHeaders: { "x-forwarded-for": ip } });
	sockets.push(socket);
	return socket;
}

/** The code the handshake was refused with, or "connected". */
function outcome(socket: Socket): Promise<string> {
	return new Promise(resolve => {
		socket.once("connect", () => resolve("connected"));
		socket.once("connect_error", err => resolve((err as { data?: { code?: string } }).data?.code ?? err.message));
	});
}

describe("a bad token on the socket.io handshake", () => {
	it("counts against the address's limit together with bad bearer tokens on HTTP, then RATE_LIMITED", async () => {
		const ip = "198.51.100.7";
		const headers = { "x-forwarded-for": ip };
		const codes: string[] = [];
		for (let i = 0; i < 2; i++) {
			const res = await api.get<{ type: string }>("/api/me", { token: "not-a-token", headers });
			codes.push(`http ${res.body.type}`);
		}
		for (let i = 0; i < IP_LIMIT; i++) codes.push(`socket ${await outcome(open("cm_not_a_real_key", ip))}`);
		console.log("handshakes and requests with bad tokens from one address:", codes.join(", "));
		expect(codes).toEqual([
			"http INVALID_TOKEN",
			"http INVALID_TOKEN",
			"socket INVALID_TOKEN",
			"socket INVALID_TOKEN",
			"socket RATE_LIMITED",
			"socket RATE_LIMITED"
		]);
		// The same budget refuses HTTP from that address now, and leaves other addresses alone.
		expect((await api.get("/api/me", { token: "not-a-token", headers })).status).toBe(429);
		const user = await signUp(api, "elsewhere");
		expect(await outcome(open(user.accessToken, "198.51.100.8"))).toBe("connected");
	});
});

describe("a socket whose revocation broadcast never arrived", () => {
	it("is refused on its next event and closed, because every event re-checks the credential", async () => {
		const user = await signUp(api, "missed");
		const key = await api.post<{ id: string; key: string }>("/api/keys", { token: user.accessToken, body: { name: "missed" } });
		const socket = open(key.body.key, "198.51.100.9");
		expect(await outcome(socket)).toBe("connected");
		const revoked = new Promise<{ code: string }>(resolve => socket.once("auth:revoked", resolve));
		expect(await socket.timeout(3000).emitWithAck("whoami", {})).toMatchObject({ user: { id: user.userId } });

		// Revoked in the database with the cache cleared, as the user service does, but no broadcast.
		await queryDb(db.url, "UPDATE api_keys SET revoked_at = now() WHERE id = $1", [key.body.id]);
		const redis = new Redis(TEST_REDIS_URL);
		try {
			const keys = await redis.keys(`${namespace}-cache*resolveToken*`);
			expect(keys.length).toBeGreaterThan(0);
			await redis.del(...keys);
		} finally {
			redis.disconnect();
		}
		expect(socket.connected).toBe(true);

		const ack = await socket.timeout(3000).emitWithAck("whoami", {});
		expect(ack).toMatchObject({ error: { code: "INVALID_TOKEN" } });
		expect(await revoked).toMatchObject({ code: "INVALID_TOKEN" });
		await new Promise<void>(resolve => (socket.connected ? socket.once("disconnect", () => resolve()) : resolve()));
		expect(socket.connected).toBe(false);
	});
});
