import { type ChildProcess, spawn } from "node:child_process";
import net from "node:net";
import { Redis } from "ioredis";
import { ServiceBroker } from "moleculer";
import { io as connect, type Socket } from "socket.io-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../lib/config";
import { brokerOptions } from "../../moleculer.config";
import type { ChatmeshNode } from "../../node";
import { apiClient, signUp, type ApiClient, type ApiResponse, type Session } from "../helpers/http";
import { clusterEnv, createTestDatabase, TEST_JWT_SECRET, TEST_NATS_URL, TEST_POSTGRES_URL, uniqueNamespace, type TestDatabase } from "../helpers/infra";
import { startTestNode } from "../helpers/nodes";

// When a dependency is down (the database, Redis, the node that serves an action), clients get
// 503 SERVICE_UNAVAILABLE with Retry-After, over HTTP and in socket.io acks, never a 500. The
// dependencies that go down are private to this file: a Redis it starts and a TCP door to
// PostgreSQL it closes; the shared services are never touched.
const sockets: Socket[] = [];

function freePort(): Promise<number> {
	return new Promise((resolve, reject) => {
		const server = net.createServer().listen(0, "127.0.0.1", () => {
			const { port } = server.address() as net.AddressInfo;
			server.close(() => resolve(port));
		});
		server.on("error", reject);
	});
}

async function until<T>(probe: () => Promise<T>, ok: (value: T) => boolean, what: string, timeoutMs = 15_000): Promise<T> {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		const value = await probe().catch(() => undefined);
		if (value !== undefined && ok(value)) return value;
		if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
		await new Promise(r => setTimeout(r, 100));
	}
}

/** A redis-server of this file's own, on a free port, killed by its pid. */
async function startPrivateRedis(): Promise<{ url: string; kill(): Promise<void> }> {
	const port = await freePort();
	const child: ChildProcess = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
	const probe = new Redis({ port, host: "127.0.0.1", lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
	await until(
		async () => {
			if (probe.status !== "ready") await probe.connect();
			return probe.ping();
		},
		pong => pong === "PONG",
		"the private redis-server"
	);
	probe.disconnect();
	return {
		url: `redis://127.0.0.1:${port}/0`,
		async kill() {
			if (child.exitCode !== null || child.signalCode !== null) return;
			const exited = new Promise(resolve => child.once("exit", resolve));
			child.kill("SIGKILL");
			await exited;
		}
	};
}

/** A TCP door to the shared PostgreSQL; closing it looks like a database that went away. */
async function startDatabaseDoor(): Promise<{ port: number; close(): Promise<void> }> {
	const target = new URL(TEST_POSTGRES_URL);
	const open = new Set<net.Socket>();
	const server = net.createServer(client => {
		const upstream = net.connect(Number(target.port || 5432), target.hostname);
		for (const s of [client, upstream]) {
			open.add(s);
			s.on("close", () => open.delete(s));
			// A reset on either side just ends the pair.
			s.on("error", () => client.destroy());
		}
		upstream.on("error", () => client.destroy());
		client.on("error", () => upstream.destroy());
		client.pipe(upstream).pipe(client);
	});
	await new Promise<void>(resolve => server.listen(0, "127.0.0.1", resolve));
	return {
		port: (server.address() as net.AddressInfo).port,
		async close() {
			const closed = new Promise(resolve => server.close(resolve));
			for (const s of open) s.destroy();
			await closed;
		}
	};
}

function openSocket(baseUrl: string, token: string): Promise<Socket> {
	const socket = connect(baseUrl, { auth: { token }, transports: ["websocket"], reconnection: false });
	sockets.push(socket);
	return new Promise((resolve, reject) => {
		socket.once("connect", () => resolve(socket));
		socket.once("connect_error", reject);
	});
}

function expectUnavailable(res: ApiResponse) {
	expect(res.status).toBe(503);
	expect(res.body).toMatchObject({ code: 503, type: "SERVICE_UNAVAILABLE", name: expect.any(String), message: expect.any(String) });
	expect(Number(res.headers.get("retry-after"))).toBeGreaterThan(0);
}

afterAll(() => {
	for (const s of sockets) s.disconnect();
});

interface Subject {
	db: TestDatabase;
	node: ChatmeshNode & { baseUrl: string };
	api: ApiClient;
	user: Session;
}

/** Hooks that start a node on a database of its own (plus `envFor`'s environment) with one signed-up user. */
function nodeUnderTest(label: string, envFor: (db: TestDatabase) => Promise<Record<string, string>>, cleanup?: () => Promise<void>): Subject {
	const subject = {} as Subject;
	beforeAll(async () => {
		subject.db = await createTestDatabase(`outage_${label}`);
		subject.node = await startTestNode({ NAMESPACE: uniqueNamespace(`outage-${label}`), ...(await envFor(subject.db)) });
		subject.api = apiClient(subject.node.baseUrl);
		subject.user = await signUp(subject.api, `outage-${label}`);
	}, 60_000);
	afterAll(async () => {
		await subject.node?.stop();
		await cleanup?.();
		await subject.db?.drop();
	});
	return subject;
}

describe("a database that goes away", () => {
	let door: Awaited<ReturnType<typeof startDatabaseDoor>>;
	const t = nodeUnderTest(
		"db",
		async db => {
			door = await startDatabaseDoor();
			const url = new URL(db.url);
			url.port = String(door.port);
			return { DATABASE_URL: url.toString() };
		},
		() => door?.close()
	);

	it("answers 503 SERVICE_UNAVAILABLE with Retry-After, over HTTP and socket.io", async () => {
		const socket = await openSocket(t.node.baseUrl, t.user.accessToken);
		expect((await t.api.post("/api/conversations", { token: t.user.accessToken, body: {} })).status).toBe(201);
		await door.close();

		expectUnavailable(await t.api.post("/api/conversations", { token: t.user.accessToken, body: { title: "lost" } }));
		expectUnavailable(await t.api.post("/api/auth/login", { body: { email: t.user.email, password: t.user.password } }));
		const ack = await socket.timeout(10_000).emitWithAck("chat:send", { content: "anyone there?" });
		expect(ack).toMatchObject({ error: { code: "SERVICE_UNAVAILABLE" } });
		// /ready says so too, while /health (liveness) does not.
		expect((await fetch(`${t.node.baseUrl}/ready`)).status).toBe(503);
		expect((await fetch(`${t.node.baseUrl}/health`)).status).toBe(200);
	});
});

describe("a Redis that goes away", () => {
	let redis: Awaited<ReturnType<typeof startPrivateRedis>>;
	const t = nodeUnderTest(
		"redis",
		async db => {
			redis = await startPrivateRedis();
			return { DATABASE_URL: db.url, REDIS_URL: redis.url };
		},
		() => redis?.kill()
	);

	it("answers a chat turn, which needs the replay log, with 503 SERVICE_UNAVAILABLE over HTTP and socket.io", async () => {
		const socket = await openSocket(t.node.baseUrl, t.user.accessToken);
		const conv = await t.api.post<{ id: string }>("/api/conversations", { token: t.user.accessToken, body: {} });
		await redis.kill();

		expectUnavailable(await t.api.post(`/api/conversations/${conv.body.id}/messages`, { token: t.user.accessToken, body: { content: "hello" } }));
		const ack = await socket.timeout(10_000).emitWithAck("chat:send", { conversationId: conv.body.id, content: "hello" });
		expect(ack).toMatchObject({ error: { code: "SERVICE_UNAVAILABLE" } });
		// Reads that need only the database still work: the rate limits fall back to memory.
		expect((await t.api.get(`/api/conversations/${conv.body.id}`, { token: t.user.accessToken })).status).toBe(200);
	});
});

describe("a service no node serves, or one that does not answer", () => {
	const namespace = uniqueNamespace("outage-nats");
	let stub: ServiceBroker | undefined;
	const t = nodeUnderTest(
		"nats",
		async db => ({ ...clusterEnv(namespace, db.url), SERVICES: "gateway,user", REQUEST_TIMEOUT_MS: "1000", SHUTDOWN_GRACE_MS: "1000" }),
		async () => {
			await stub?.stop();
		}
	);

	it("answers 503 when no node serves the action", async () => {
		const socket = await openSocket(t.node.baseUrl, t.user.accessToken);
		expectUnavailable(await t.api.get("/api/conversations", { token: t.user.accessToken }));
		expectUnavailable(await t.api.post(`/api/conversations/${crypto.randomUUID()}/messages`, { token: t.user.accessToken, body: { content: "hello" } }));
		const ack = await socket.timeout(10_000).emitWithAck("chat:send", { content: "hello" });
		expect(ack).toMatchObject({ error: { code: "SERVICE_UNAVAILABLE" } });
	});

	it("answers 503 when the serving node does not answer in time", async () => {
		const config = loadConfig({
			NAMESPACE: namespace,
			TRANSPORTER: TEST_NATS_URL,
			JWT_SECRET: TEST_JWT_SECRET,
			LOG_LEVEL: "error",
			SERVICES: "llm",
			SHUTDOWN_GRACE_MS: "0"
		});
		stub = new ServiceBroker({ ...brokerOptions(config), nodeID: "silent-conversation" });
		// A conversation node that takes every list call and never answers.
		stub.createService({ name: "conversation", actions: { list: () => new Promise(() => {}) } });
		await stub.start();
		await t.node.broker.waitForServices("conversation", 10_000);
		expectUnavailable(await t.api.get("/api/conversations", { token: t.user.accessToken }));
	});
});
