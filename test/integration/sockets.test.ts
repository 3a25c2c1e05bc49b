import { io as connect, type Socket } from "socket.io-client";
import { describe, expect, it } from "vitest";
import { signUp, type ApiClient } from "../helpers/http";
import { type TestNode, withChatNode } from "../helpers/fixtures";

// socket.io on the gateway: the handshake authenticates with the same tokens as HTTP, events are
// rate-limited like requests, and an expiring access token ends the connection with a reason.
const TOKEN_TTL_S = 2;
const EVENT_LIMIT = 6;
let node: TestNode;
let api: ApiClient;

const { sockets } = withChatNode({
	label: "sockets",
	simulator: false,
	nats: true,
	rateLimits: JSON.stringify({ perUser: { default: { points: EVENT_LIMIT, durationS: 60 } } }),
	env: { SERVICES: "gateway,user", ACCESS_TOKEN_TTL_S: String(TOKEN_TTL_S) },
	started: f => {
		({ node, api } = f);
	}
});

function open(token?: string): Socket {
	const socket = connect(node.baseUrl, { auth: token ? { token } : {}, transports: ["websocket"], reconnection: false });
	sockets.push(socket);
	return socket;
}

function connected(socket: Socket): Promise<void> {
	return new Promise((resolve, reject) => {
		socket.once("connect", () => resolve());
		socket.once("connect_error", reject);
	});
}

function refused(socket: Socket): Promise<{ message: string; data?: { code: string } }> {
	return new Promise((resolve, reject) => {
		socket.once("connect", () => reject(new Error("connected without valid credentials")));
		socket.once("connect_error", err => resolve(err as unknown as { message: string; data?: { code: string } }));
	});
}

const emit = <T>(socket: Socket, event: string, payload: unknown = {}) => socket.timeout(5000).emitWithAck(event, payload) as Promise<T>;

describe("socket.io handshake", () => {
	it("refuses a connection without a token", async () => {
		const err = await refused(open());
		expect(err.data?.code).toBe("UNAUTHORIZED");
	});

	it("refuses a forged token", async () => {
		const err = await refused(open("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."));
		expect(err.data?.code).toBe("INVALID_TOKEN");
	});

	it("accepts an access token and an API key, and knows the caller", async () => {
		const user = await signUp(api, "sock");
		const byToken = open(user.accessToken);
		await connected(byToken);
		expect(await emit<{ user: { id: string } }>(byToken, "whoami")).toMatchObject({ user: { id: user.userId } });

		const key = await api.post<{ key: string }>("/api/keys", { token: user.accessToken, body: { name: "socket" } });
		const byKey = open(key.body.key);
		await connected(byKey);
		expect(await emit<{ user: { id: string } }>(byKey, "whoami")).toMatchObject({ user: { id: user.userId } });
	});
});

describe("an access token expiring mid-connection", () => {
	it("ends the connection with a reason the client can act on", async () => {
		const user = await signUp(api, "expiry");
		const socket = open(user.accessToken);
		await connected(socket);
		const expired = new Promise<{ code: string; message: string }>(resolve => socket.once("auth:expired", resolve));
		const disconnected = new Promise<string>(resolve => socket.once("disconnect", resolve));
		const reason = await expired;
		expect(reason.code).toBe("TOKEN_EXPIRED");
		expect(reason.message).toMatch(/refresh/);
		expect(await disconnected).toBe("io server disconnect");
	}, 10_000);

	it("stays open when the client sends a fresh token in time", async () => {
		const user = await signUp(api, "renew");
		const socket = open(user.accessToken);
		await connected(socket);
		let expiredAt = 0;
		socket.once("auth:expired", () => (expiredAt = Date.now()));
		// Time passing is the point: the refresh comes late in the first token's life.
		await new Promise(r => setTimeout(r, 1000));
		const fresh = await api.post<{ accessToken: string }>("/api/auth/refresh", { body: { refreshToken: user.refreshToken } });
		const ack = await emit<{ ok: boolean }>(socket, "auth:refresh", { token: fresh.body.accessToken });
		expect(ack.ok).toBe(true);
		// Past the first token's expiry, still connected.
		// Time passing is the point: past the first token's expiry nothing may happen.
		await new Promise(r => setTimeout(r, 1500));
		expect(expiredAt).toBe(0);
		expect(socket.connected).toBe(true);
	}, 10_000);

	it("refuses a refresh with another user's token", async () => {
		const a = await signUp(api, "mine");
		const b = await signUp(api, "theirs");
		const socket = open(a.accessToken);
		await connected(socket);
		const ack = await emit<{ error: { code: string } }>(socket, "auth:refresh", { token: b.accessToken });
		expect(ack.error.code).toBe("UNAUTHORIZED");
	});
});

describe("socket.io events and the rate limiter", () => {
	it("counts events like requests and refuses past the limit with RATE_LIMITED", async () => {
		const user = await signUp(api, "chatty");
		const socket = open(user.accessToken);
		await connected(socket); // the handshake counts as one
		const acks: Array<{ user?: unknown; error?: { code: string; data: { retryAfter: number } } }> = [];
		for (let i = 0; i < EVENT_LIMIT + 2; i++) acks.push(await emit(socket, "whoami"));
		expect(acks.filter(a => a.user)).toHaveLength(EVENT_LIMIT - 1);
		const refusedAck = acks.find(a => a.error);
		expect(refusedAck?.error?.code).toBe("RATE_LIMITED");
		expect(refusedAck?.error?.data.retryAfter).toBeGreaterThanOrEqual(1);
		// The same budget covers HTTP: this user's next request is refused too.
		expect((await api.get("/api/me", { token: user.accessToken })).status).toBe(429);
	});
});
