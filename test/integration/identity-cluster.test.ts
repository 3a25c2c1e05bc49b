import { beforeAll, describe, expect, it } from "vitest";
import { waitFor } from "../helpers/wait";
import { withProcesses } from "../helpers/fixtures";
import { clusterEnv, uniqueNamespace } from "../helpers/infra";
import { apiClient, signUp, type ApiClient } from "../helpers/http";
import { spawnNode } from "../helpers/processes";

// Two gateway processes over the real NATS and Redis, as behind a load balancer.
const LIMIT = 5;
const cluster = withProcesses({ label: "identity_cluster", database: true });
const { procs } = cluster;
let gw1: ApiClient;
let gw2: ApiClient;

beforeAll(async () => {
	const env = {
		...clusterEnv(uniqueNamespace("idcluster"), cluster.db.url),
		SERVICES: "gateway,user",
		// Debug logs: the log-leak test below reads everything these processes print.
		LOG_LEVEL: "debug",
		RATE_LIMITS: JSON.stringify({
			perUser: { default: { points: LIMIT, durationS: 60 } },
			perIp: { default: { points: 1000, durationS: 60 }, auth: { points: 1000, durationS: 60 } }
		})
	};
	const a = spawnNode({ ...env, NODE_ID: "gw-a" });
	const b = spawnNode({ ...env, NODE_ID: "gw-b" });
	procs.push(a, b);
	const [portA, portB] = await Promise.all([a.httpPort(), b.httpPort()]);
	gw1 = apiClient(`http://127.0.0.1:${portA}`);
	gw2 = apiClient(`http://127.0.0.1:${portB}`);
}, 60_000);

const secrets: string[] = [];

describe("two gateway replicas", () => {
	it("a key revoked through gateway 1 is refused by gateway 2 on the next request", async () => {
		const user = await signUp(gw1, "revoker");
		secrets.push(user.password, user.accessToken, user.refreshToken);
		const created = await gw1.post<{ id: string; key: string }>("/api/keys", { token: user.accessToken, body: { name: "ci" } });
		expect(created.status).toBe(201);
		secrets.push(created.body.key);

		// Resolved (and cached) on both replicas first.
		expect((await gw1.get("/api/me", { token: created.body.key })).status).toBe(200);
		expect((await gw2.get("/api/me", { token: created.body.key })).status).toBe(200);

		expect((await gw1.delete(`/api/keys/${created.body.id}`, { token: user.accessToken })).status).toBe(204);
		const after = await gw2.get("/api/me", { token: created.body.key });
		expect(after.status).toBe(401);
		expect(after.body).toMatchObject({ type: "INVALID_TOKEN" });
	});

	it(`lets at most ${LIMIT} requests per window through across both replicas, then 429 with Retry-After`, async () => {
		const user = await signUp(gw2, "limited");
		secrets.push(user.password, user.accessToken, user.refreshToken);
		const results = [];
		for (let i = 0; i < 12; i++) results.push(await (i % 2 === 0 ? gw1 : gw2).get("/api/me", { token: user.accessToken }));
		const ok = results.filter(r => r.status === 200);
		const refused = results.filter(r => r.status === 429);
		expect(ok).toHaveLength(LIMIT);
		expect(refused).toHaveLength(12 - LIMIT);
		// The first refusal follows the last success: no replica let an extra one through later.
		expect(results.findIndex(r => r.status === 429)).toBe(LIMIT);
		const first = refused[0];
		expect(first.body).toMatchObject({ code: 429, type: "RATE_LIMITED" });
		expect(Number(first.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
		expect(first.headers.get("ratelimit-limit")).toBe(String(LIMIT));
		expect(first.headers.get("ratelimit-remaining")).toBe("0");
		expect(Number(ok[0].headers.get("ratelimit-remaining"))).toBe(LIMIT - 1);

		// Another user is not affected by this one's exhaustion.
		const other = await signUp(gw1, "unaffected");
		secrets.push(other.password, other.accessToken, other.refreshToken);
		expect((await gw2.get("/api/me", { token: other.accessToken })).status).toBe(200);
	});

	it("never writes passwords, tokens or API keys to the logs", async () => {
		const user = await signUp(gw1, "logged");
		const login = await gw2.post<{ accessToken: string; refreshToken: string }>("/api/auth/login", {
			body: { email: user.email, password: user.password }
		});
		const refreshed = await gw1.post<{ accessToken: string; refreshToken: string }>("/api/auth/refresh", {
			body: { refreshToken: login.body.refreshToken }
		});
		const key = await gw2.post<{ key: string }>("/api/keys", { token: refreshed.body.accessToken, body: { name: "logged" } });
		expect((await gw1.get("/api/me", { token: key.body.key })).status).toBe(200);
		await gw1.post("/api/auth/login", { body: { email: user.email, password: "a wrong password here" } });
		secrets.push(
			user.password,
			"a wrong password here",
			user.accessToken,
			user.refreshToken,
			login.body.accessToken,
			login.body.refreshToken,
			refreshed.body.accessToken,
			refreshed.body.refreshToken,
			key.body.key
		);
		// Give the processes a moment to flush what they log after answering.
		await waitFor(() => /user\.login|user\.refresh/.test(procs.map(p => p.output()).join("\n")), { what: "the debug logs of the calls" });
		const logs = procs.map(p => p.output()).join("\n");
		expect(logs.length).toBeGreaterThan(1000); // debug logging really was on
		expect(logs).toMatch(/user\.login|user\.refresh/); // and saw these calls
		for (const secret of secrets) expect(logs.includes(secret), `a secret of length ${secret.length} leaked`).toBe(false);
		// Parts of a JWT (its signature) must not appear either.
		for (const token of [login.body.accessToken, refreshed.body.accessToken]) expect(logs.includes(token.split(".")[2])).toBe(false);
	});
});
