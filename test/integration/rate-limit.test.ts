import crypto from "node:crypto";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { afterAll, describe, expect, it } from "vitest";
import { ERR_RATE_LIMITED, RateLimitedError } from "../../lib/errors";
import { ipBucket, RateLimiter, type RateLimitDecision, type RateLimitRule, type RateLimitSettings, type RouteClass } from "../../services/gateway/rate-limit";
import { TEST_REDIS_URL } from "../helpers/infra";

// The limiter against the real Redis: replicas are RateLimiter instances with their own ioredis
// clients, as in a cluster of gateways. Every key of this file starts with `prefix`, and each
// test adds its own label so their counters never meet.
const prefix = `t-rl-${crypto.randomBytes(4).toString("hex")}:rl`;
const clients: Redis[] = [];
const cleanups: Array<() => Promise<void> | void> = [];

async function connectedClient(): Promise<Redis> {
	const client = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1, enableOfflineQueue: false, lazyConnect: true });
	client.on("error", () => {});
	clients.push(client);
	await client.connect();
	return client;
}

async function keysMatching(client: Redis, pattern: string): Promise<string[]> {
	const keys: string[] = [];
	let cursor = "0";
	do {
		const [next, batch] = await client.scan(cursor, "MATCH", pattern, "COUNT", 500);
		keys.push(...batch);
		cursor = next;
	} while (cursor !== "0");
	return keys;
}

const rule = (points: number, durationS = 10): RateLimitRule => ({ points, durationS });
const roomy = rule(1000, 60);

interface Overrides {
	perUser?: Partial<Record<RouteClass, RateLimitRule>>;
	perIp?: Partial<Record<RouteClass, RateLimitRule>>;
}

/** Settings under this file's prefix; anything not overridden is too roomy to matter. */
function settings(label: string, overrides: Overrides = {}): RateLimitSettings {
	return {
		keyPrefix: `${prefix}:${label}`,
		perUser: { chat: roomy, auth: roomy, default: roomy, ...overrides.perUser },
		perIp: { chat: roomy, auth: roomy, default: roomy, ...overrides.perIp },
		loginFailures: { points: 3, durationS: 30, blockDurationS: 1, maxBlockDurationS: 2 }
	};
}

/** A logger that keeps what it is told. */
function recordingLogger() {
	const warnings: unknown[][] = [];
	const infos: unknown[][] = [];
	return {
		warnings,
		infos,
		warn: (msg: string, ...a: unknown[]) => void warnings.push([msg, ...a]),
		info: (msg: string, ...a: unknown[]) => void infos.push([msg, ...a])
	};
}

async function consumeTimes(n: number, limiter: RateLimiter, routeClass: RouteClass, ip: string, userId?: string) {
	const decisions: RateLimitDecision[] = [];
	for (let i = 0; i < n; i++) decisions.push(await limiter.consume(routeClass, ip, userId));
	return decisions;
}

const allowedFlags = (decisions: RateLimitDecision[]) => decisions.map(d => d.allowed);

afterAll(async () => {
	for (const cleanup of cleanups) await cleanup();
	const admin = await connectedClient();
	const keys = await keysMatching(admin, `${prefix}:*`);
	for (let i = 0; i < keys.length; i += 500) await admin.del(...keys.slice(i, i + 500));
	await Promise.all(clients.map(c => c.quit().catch(() => c.disconnect())));
});

describe("cluster-wide limits", () => {
	it("lets exactly L requests through across two replicas, then refuses with Retry-After", async () => {
		const s = settings("replicas", { perUser: { chat: rule(5, 10) } });
		const replicas = [new RateLimiter({ settings: s, redis: await connectedClient() }), new RateLimiter({ settings: s, redis: await connectedClient() })];
		const decisions: RateLimitDecision[] = [];
		for (let i = 0; i < 12; i++) decisions.push(await replicas[i % 2].consume("chat", "198.51.100.1", "user-1"));

		expect(allowedFlags(decisions)).toEqual([true, true, true, true, true, false, false, false, false, false, false, false]);
		expect(decisions.slice(0, 5).map(d => d.remaining)).toEqual([4, 3, 2, 1, 0]);
		const sixth = decisions[5];
		expect(sixth).toMatchObject({ allowed: false, limit: 5, remaining: 0, scope: "user" });
		expect(sixth.retryAfterS).toBeGreaterThanOrEqual(1);
		expect(sixth.retryAfterS).toBeLessThanOrEqual(10);
		const headers = RateLimiter.headers(sixth);
		expect(headers).toMatchObject({ "Retry-After": String(sixth.retryAfterS), "RateLimit-Remaining": "0", "RateLimit-Limit": "5" });
		expect(Number(headers["RateLimit-Reset"])).toBeGreaterThanOrEqual(1);
		expect(RateLimiter.headers(decisions[0])).toEqual({ "RateLimit-Limit": "5", "RateLimit-Remaining": "4", "RateLimit-Reset": expect.any(String) });
	});

	it("counts atomically when replicas are hit at the same moment", async () => {
		const s = settings("burst", { perUser: { chat: rule(5, 10) } });
		const replicas = [new RateLimiter({ settings: s, redis: await connectedClient() }), new RateLimiter({ settings: s, redis: await connectedClient() })];
		const decisions = await Promise.all(Array.from({ length: 20 }, (_, i) => replicas[i % 2].consume("chat", "198.51.100.2", "user-burst")));
		expect(decisions.filter(d => d.allowed)).toHaveLength(5);
	});

	it("keeps per-user and per-IP buckets apart", async () => {
		const limiter = new RateLimiter({
			settings: settings("scopes", { perUser: { default: rule(3, 10) }, perIp: { default: rule(5, 10) } }),
			redis: await connectedClient()
		});
		// User A runs out of their own bucket, from any address…
		const a = await consumeTimes(4, limiter, "default", "192.0.2.1", "user-a");
		expect(allowedFlags(a)).toEqual([true, true, true, false]);
		expect(a[3].scope).toBe("user");
		expect(await limiter.consume("default", "192.0.2.2", "user-a")).toMatchObject({ allowed: false, scope: "user" });
		// …which does not touch user B on another address.
		expect(await limiter.consume("default", "192.0.2.3", "user-b")).toMatchObject({ allowed: true, scope: "user", remaining: 2 });
		// Many users behind one address share its bucket.
		const many: RateLimitDecision[] = [];
		for (let i = 1; i <= 6; i++) many.push(await limiter.consume("default", "192.0.2.4", `crowd-${i}`));
		expect(allowedFlags(many)).toEqual([true, true, true, true, true, false]);
		expect(many[5]).toMatchObject({ scope: "ip", remaining: 0, limit: 5 });
		expect(await limiter.consume("default", "192.0.2.4")).toMatchObject({ allowed: false, scope: "ip" });
	});

	it("keeps route classes apart", async () => {
		const limiter = new RateLimiter({
			settings: settings("classes", { perUser: { chat: rule(2, 10), auth: rule(2, 10), default: rule(2, 10) } }),
			redis: await connectedClient()
		});
		expect(allowedFlags(await consumeTimes(3, limiter, "chat", "192.0.2.10", "user-c"))).toEqual([true, true, false]);
		expect(await limiter.consume("default", "192.0.2.10", "user-c")).toMatchObject({ allowed: true, remaining: 1 });
		expect(await limiter.consume("auth", "192.0.2.10", "user-c")).toMatchObject({ allowed: true, remaining: 1 });
	});

	it("counts IPv6 callers by their /64 and IPv4-mapped addresses as IPv4", async () => {
		expect(ipBucket("2001:db8:1:2::1")).toBe("2001:db8:1:2::/64");
		expect(ipBucket("::ffff:198.51.100.4")).toBe("198.51.100.4");
		expect(ipBucket("198.51.100.4")).toBe("198.51.100.4");
		const limiter = new RateLimiter({ settings: settings("v6", { perIp: { default: rule(2, 10) } }), redis: await connectedClient() });
		await limiter.consume("default", "2001:db8:1:2::1");
		await limiter.consume("default", "2001:db8:1:2:ffff::9");
		expect(await limiter.consume("default", "2001:db8:1:2::abcd")).toMatchObject({ allowed: false, scope: "ip" });
		expect((await limiter.consume("default", "2001:db8:1:3::1")).allowed).toBe(true);
		await limiter.consume("default", "::ffff:198.51.100.4");
		await limiter.consume("default", "198.51.100.4");
		expect((await limiter.consume("default", "198.51.100.4")).allowed).toBe(false);
	});
});

describe("without Redis", () => {
	it("enforces the limits in memory and writes nothing to Redis", async () => {
		const s = settings("memory", { perUser: { chat: rule(3, 10) }, perIp: { default: rule(2, 10) } });
		const limiter = new RateLimiter({ settings: s });
		const chat = await consumeTimes(4, limiter, "chat", "192.0.2.20", "user-m");
		expect(allowedFlags(chat)).toEqual([true, true, true, false]);
		expect(chat[3].retryAfterS).toBeGreaterThanOrEqual(1);
		expect(allowedFlags(await consumeTimes(3, limiter, "default", "192.0.2.21"))).toEqual([true, true, false]);
		expect(await limiter.loginFailed("m@example.com", "192.0.2.21")).toMatchObject({ allowed: true, remaining: 2 });
		expect(await keysMatching(await connectedClient(), `${s.keyPrefix}:*`)).toEqual([]);
	});
});

describe("when Redis fails", () => {
	it("answers from memory, stays bounded and warns once when Redis is unreachable", async () => {
		const dead = new Redis({ host: "127.0.0.1", port: 1, maxRetriesPerRequest: 1, enableOfflineQueue: false, retryStrategy: () => 100 });
		dead.on("error", () => {});
		clients.push(dead);
		const logger = recordingLogger();
		const limiter = new RateLimiter({ settings: settings("dead", { perUser: { chat: rule(3, 10) } }), redis: dead, logger });

		const decisions = await consumeTimes(5, limiter, "chat", "192.0.2.30", "user-d");
		expect(allowedFlags(decisions)).toEqual([true, true, true, false, false]);
		expect(decisions[3].retryAfterS).toBeGreaterThanOrEqual(1);
		expect(await limiter.checkLogin("d@example.com", "192.0.2.30")).toMatchObject({ allowed: true });
		await expect(limiter.loginSucceeded("d@example.com", "192.0.2.30")).resolves.toBeUndefined();
		expect(logger.warnings).toHaveLength(1);
		expect(String(logger.warnings[0][0])).toMatch(/Redis/);
	});

	it("falls back when the client disconnects, returns to Redis, and warns again on the next outage", async () => {
		const client = await connectedClient();
		const logger = recordingLogger();
		const limiter = new RateLimiter({ settings: settings("flap", { perIp: { default: rule(3, 30) } }), redis: client, logger });
		const ip = "192.0.2.40";

		expect(await limiter.consume("default", ip)).toMatchObject({ allowed: true, remaining: 2 });
		expect(logger.warnings).toHaveLength(0);

		const ended = new Promise(resolve => client.once("end", resolve));
		client.disconnect();
		await ended;
		// This node's memory counts from zero, still to at most the limit.
		expect(allowedFlags(await consumeTimes(4, limiter, "default", ip))).toEqual([true, true, true, false]);
		expect(logger.warnings).toHaveLength(1);

		await client.connect();
		// Redis still holds the one point used before the outage.
		expect(await limiter.consume("default", ip)).toMatchObject({ allowed: true, remaining: 1 });
		expect(logger.infos).toHaveLength(1);

		const endedAgain = new Promise(resolve => client.once("end", resolve));
		client.disconnect();
		await endedAgain;
		await limiter.consume("default", ip);
		expect(logger.warnings).toHaveLength(2);
	});

	it("does not hang when Redis accepts connections but never answers", async () => {
		const sockets: net.Socket[] = [];
		const server = net.createServer(socket => void sockets.push(socket));
		await new Promise<void>(resolve => server.listen(0, "127.0.0.1", resolve));
		const { port } = server.address() as net.AddressInfo;
		// No ready check or client info: nothing the client waits for, so it is "ready" on connect.
		const hung = new Redis({
			host: "127.0.0.1",
			port,
			enableReadyCheck: false,
			disableClientInfo: true,
			maxRetriesPerRequest: 1,
			enableOfflineQueue: false,
			lazyConnect: true
		});
		hung.on("error", () => {});
		clients.push(hung);
		cleanups.push(async () => {
			hung.disconnect();
			for (const socket of sockets) socket.destroy();
			await new Promise(resolve => server.close(resolve));
		});
		await hung.connect();
		expect(hung.status).toBe("ready");

		const logger = recordingLogger();
		const limiter = new RateLimiter({ settings: settings("hung", { perUser: { chat: rule(2, 10) } }), redis: hung, logger, redisTimeoutMs: 200 });
		// Every call answers (a call waiting on the silent store would hang the test), from memory.
		expect(allowedFlags(await consumeTimes(3, limiter, "chat", "192.0.2.50", "user-h"))).toEqual([true, true, false]);
		expect(logger.warnings).toHaveLength(1);
		// The connection never dropped: memory took over because the store did not answer in time.
		expect(logger.warnings[0][1]).toEqual({ redisStatus: "ready" });
	});
});

describe("failed sign-ins", () => {
	it("blocks an email+address after N failures, across replicas, with a block that grows", async () => {
		const s = settings("login");
		const [r1, r2] = [new RateLimiter({ settings: s, redis: await connectedClient() }), new RateLimiter({ settings: s, redis: await connectedClient() })];
		const email = "Alice@Example.com";
		const ip = "203.0.113.9";

		expect(await r1.checkLogin(email, ip)).toMatchObject({ allowed: true, remaining: 3, limit: 3 });
		expect(await r1.loginFailed(email, ip)).toMatchObject({ allowed: true, remaining: 2 });
		// Same account however it is typed, counted on the other replica.
		expect(await r2.loginFailed("  alice@EXAMPLE.com ", ip)).toMatchObject({ allowed: true, remaining: 1 });
		expect(await r1.loginFailed(email, ip)).toMatchObject({ allowed: false, retryAfterS: 1, scope: "login" });
		expect(await r2.checkLogin(email, ip)).toMatchObject({ allowed: false, retryAfterS: 1, scope: "login" });
		// Only this email from this address is blocked.
		expect((await r2.checkLogin(email, "203.0.113.10")).allowed).toBe(true);
		expect((await r2.checkLogin("bob@example.com", ip)).allowed).toBe(true);

		await sleep(1100);
		expect(await r2.checkLogin(email, ip)).toMatchObject({ allowed: true, remaining: 3 });
		await r2.loginFailed(email, ip);
		await r1.loginFailed(email, ip);
		// The second block lasts twice as long as the first…
		expect(await r2.loginFailed(email, ip)).toMatchObject({ allowed: false, retryAfterS: 2 });
		expect(await r1.checkLogin(email, ip)).toMatchObject({ allowed: false, retryAfterS: 2 });
		await sleep(1100);
		expect(await r1.checkLogin(email, ip)).toMatchObject({ allowed: false, retryAfterS: 1 });
		await sleep(1000);
		expect((await r1.checkLogin(email, ip)).allowed).toBe(true);
		// …and the third is capped at maxBlockDurationS (2 s here, not 4).
		await r1.loginFailed(email, ip);
		await r1.loginFailed(email, ip);
		expect(await r1.loginFailed(email, ip)).toMatchObject({ allowed: false, retryAfterS: 2 });
	});

	it("forgets failures and the back-off after a successful sign-in", async () => {
		const limiter = new RateLimiter({ settings: settings("login-ok"), redis: await connectedClient() });
		const email = "carol@example.com";
		const ip = "203.0.113.20";
		await limiter.loginFailed(email, ip);
		await limiter.loginFailed(email, ip);
		await limiter.loginSucceeded(email, ip);
		expect(await limiter.checkLogin(email, ip)).toMatchObject({ allowed: true, remaining: 3 });
		await limiter.loginFailed(email, ip);
		expect(await limiter.loginFailed(email, ip)).toMatchObject({ allowed: true, remaining: 1 });

		expect(await limiter.loginFailed(email, ip)).toMatchObject({ allowed: false, retryAfterS: 1 });
		await limiter.loginSucceeded(email, ip);
		expect((await limiter.checkLogin(email, ip)).allowed).toBe(true);
		await limiter.loginFailed(email, ip);
		await limiter.loginFailed(email, ip);
		// Back to the first block's length, not the doubled one.
		expect(await limiter.loginFailed(email, ip)).toMatchObject({ allowed: false, retryAfterS: 1 });
	});
});

describe("refusals as errors and headers", () => {
	it("assertAllowed throws RateLimitedError with retryAfter and scope only when refused", async () => {
		const limiter = new RateLimiter({ settings: settings("assert", { perUser: { chat: rule(1, 10) } }), redis: await connectedClient() });
		const allowed = await limiter.consume("chat", "192.0.2.60", "user-x");
		expect(() => RateLimiter.assertAllowed(allowed)).not.toThrow();

		const refused = await limiter.consume("chat", "192.0.2.60", "user-x");
		expect(refused.allowed).toBe(false);
		expect(() => RateLimiter.assertAllowed(refused)).toThrow(RateLimitedError);
		await expect(Promise.resolve(refused).then(RateLimiter.assertAllowed)).rejects.toMatchObject({
			type: "RATE_LIMITED",
			code: 429,
			data: { retryAfter: refused.retryAfterS, scope: "user" }
		});
		expect(ERR_RATE_LIMITED).toBe("RATE_LIMITED");
		expect(refused.retryAfterS).toBeGreaterThanOrEqual(1);
	});

	it("stores only hashed callers under the key prefix", async () => {
		const client = await connectedClient();
		const s = settings("keys");
		const limiter = new RateLimiter({ settings: s, redis: client });
		await limiter.loginFailed("Secret.Person+tag@Example.com", "192.0.2.77");
		await limiter.consume("chat", "192.0.2.77", "user-42");

		const keys = await keysMatching(client, `${prefix}:*`);
		const ours = keys.filter(k => k.startsWith(`${s.keyPrefix}:`));
		expect(ours.some(k => /:login:fail:[0-9a-f]{32}$/.test(k))).toBe(true);
		expect(ours.some(k => /:ip:chat:[0-9a-f]{32}$/.test(k))).toBe(true);
		expect(ours.some(k => /:user:chat:[0-9a-f]{32}$/.test(k))).toBe(true);
		for (const key of keys) {
			expect(key.startsWith(`${prefix}:`)).toBe(true);
			expect(key.toLowerCase()).not.toContain("secret.person");
			expect(key.toLowerCase()).not.toContain("example.com");
			expect(key).not.toContain("@");
			expect(key).not.toContain("192.0.2.77");
			expect(key).not.toContain("user-42");
		}
	});
});
