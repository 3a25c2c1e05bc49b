import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../lib/config";
import { freePort, startNats, type Dependency } from "../faults/deps";
import { withProcesses } from "../helpers/fixtures";
import { clusterEnv, uniqueNamespace } from "../helpers/infra";
import { simulatorProviders } from "../helpers/nodes";
import type { NodeProcess } from "../helpers/processes";
import { waitFor } from "../helpers/wait";

// The health listener (HEALTH_PORT) of nodes without the gateway, on real processes over NATS:
// what /health and /ready answer for a core node and an llm node, /ready failing for the
// dependency that is missing, and the SIGTERM order (not ready first, then drain, exit 0).
const cluster = withProcesses({ label: "health", database: true, simulator: {} });
let env: Record<string, string>;
let privateNats: Dependency | undefined;

beforeAll(() => {
	env = clusterEnv(uniqueNamespace("health"), cluster.db.url);
});
afterAll(async () => {
	await privateNats?.dispose();
});

const CORE = "user,conversation,quota,moderation,tool";

interface ReadyBody {
	status: string;
	nodeID: string;
	checks: Record<string, { status: string; detail: string }>;
}

async function get<T>(url: string): Promise<{ status: number; body: T }> {
	const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
	return { status: res.status, body: (await res.json()) as T };
}

async function healthBase(proc: NodeProcess): Promise<string> {
	const match = await proc.waitForOutput(/Health listener on http:\/\/[^:]+:(\d+)/, 40_000);
	return `http://127.0.0.1:${match[1]}`;
}

/** Polls /ready until it answers `status`; returns that answer. */
async function readyWith(base: string, status: number, timeoutMs = 40_000, also: (body: ReadyBody) => boolean = () => true): Promise<ReadyBody> {
	const answer = await waitFor(
		async () => {
			const res = await get<ReadyBody>(`${base}/ready`);
			return res.status === status && also(res.body) ? res : undefined;
		},
		{ timeoutMs, intervalMs: 200, what: `/ready ${status}` }
	);
	return answer.body;
}

describe("health listener of nodes without the gateway", () => {
	it("a core node: /health alive, /ready checks its database and transporter, unknown paths 404", async () => {
		const core = cluster.spawn({ ...env, SERVICES: CORE, NODE_ID: "core-1", HEALTH_PORT: "0" });
		const base = await healthBase(core);
		const health = await get<{ status: string; nodeID: string }>(`${base}/health`);
		expect(health).toMatchObject({ status: 200, body: { status: "ok", nodeID: "core-1" } });

		const ready = await readyWith(base, 200);
		expect(ready.status).toBe("ready");
		expect(ready.checks.database).toMatchObject({ status: "ok", detail: "postgresql" });
		expect(ready.checks.transporter).toMatchObject({ status: "ok", detail: "nats" });
		// A core node serves no model: it does not depend on one.
		expect(ready.checks.models).toBeUndefined();

		expect((await fetch(`${base}/metrics`)).status).toBe(404);
		expect((await fetch(`${base}/ready`, { method: "POST" })).status).toBe(405);
	}, 60_000);

	it("an llm node is ready with a model endpoint and not ready without one", async () => {
		const deadPort = await freePort();
		const good = cluster.spawn({ ...env, SERVICES: "llm", NODE_ID: "llm-good", HEALTH_PORT: "0", LLM_PROVIDERS: simulatorProviders(cluster.sim) });
		const bad = cluster.spawn({
			...env,
			SERVICES: "llm",
			NODE_ID: "llm-bad",
			HEALTH_PORT: "0",
			LLM_PROVIDERS: JSON.stringify([{ name: "nowhere", baseURL: `http://127.0.0.1:${deadPort}/v1`, models: ["sim-small"] }])
		});
		const [goodBase, badBase] = await Promise.all([healthBase(good), healthBase(bad)]);

		const ready = await readyWith(goodBase, 200);
		expect(ready.checks.models).toMatchObject({ status: "ok", detail: "sim" });
		expect(ready.checks.database).toBeUndefined();

		// Alive, but of no use: the other llm node's model does not count for this one.
		expect((await get(`${badBase}/health`)).status).toBe(200);
		// Started (a starting node is not ready either), and still not ready.
		const notReady = await readyWith(badBase, 503, 40_000, body => body.checks.lifecycle?.status === "ok");
		expect(notReady.status).toBe("not_ready");
		expect(notReady.checks.models.status).toBe("fail");
		expect(notReady.checks.transporter.status).toBe("ok");
	}, 60_000);

	it("is not ready while its NATS server is unreachable, and ready again when it is back", async () => {
		privateNats = await startNats();
		const node = cluster.spawn({
			...env,
			TRANSPORTER: privateNats.url,
			SERVICES: "llm",
			NODE_ID: "llm-nats",
			HEALTH_PORT: "0",
			LLM_PROVIDERS: simulatorProviders(cluster.sim)
		});
		const base = await healthBase(node);
		await readyWith(base, 200);

		await privateNats.kill();
		const down = await readyWith(base, 503, 15_000);
		expect(down.checks.transporter.status).toBe("fail");
		expect((await get(`${base}/health`)).status).toBe(200);

		await privateNats.start();
		const back = await readyWith(base, 200, 20_000);
		expect(back.checks.transporter).toMatchObject({ status: "ok", detail: "nats" });
	}, 60_000);

	it("on SIGTERM answers not ready first (still alive), then drains and exits 0", async () => {
		const node = cluster.spawn({
			...env,
			SERVICES: "llm",
			NODE_ID: "llm-term",
			HEALTH_PORT: "0",
			LLM_PROVIDERS: simulatorProviders(cluster.sim),
			SHUTDOWN_UNREADY_DELAY_MS: "2000"
		});
		const base = await healthBase(node);
		await readyWith(base, 200);

		node.kill("SIGTERM");
		const stopping = await readyWith(base, 503, 5000);
		expect(stopping.checks.lifecycle).toMatchObject({ status: "fail", detail: "node is stopping" });
		// Liveness holds through the drain: a probe must not restart a node that is leaving.
		expect((await get(`${base}/health`)).status).toBe(200);

		expect(await node.exited).toBe(0);
		expect(node.output()).toMatch(/Not ready: draining in 2000 ms/);
	}, 60_000);
});

describe("the gateway's own readiness on SIGTERM", () => {
	// The gateway answers its probes on PORT at /health and /ready (its root route), not on a listener of its own.
	it("/ready answers 503 once the node is stopping, /health 200, and the process exits 0", async () => {
		const gateway = cluster.spawn({
			...env,
			SERVICES: "gateway,llm",
			NODE_ID: "gw-term",
			LLM_PROVIDERS: simulatorProviders(cluster.sim),
			SHUTDOWN_UNREADY_DELAY_MS: "2000"
		});
		const base = `http://127.0.0.1:${await gateway.httpPort(40_000)}`;
		await readyWith(base, 200);

		gateway.kill("SIGTERM");
		const stopping = await readyWith(base, 503, 5000);
		expect(stopping.checks.lifecycle).toMatchObject({ status: "fail", detail: "node is stopping" });
		expect((await get(`${base}/health`)).status).toBe(200);
		expect(await gateway.exited).toBe(0);
	}, 60_000);
});

describe("HEALTH_PORT and SHUTDOWN_UNREADY_DELAY_MS configuration", () => {
	it("has no listener and no delay by default, and refuses values of the wrong form", () => {
		const defaults = loadConfig({});
		expect(defaults.healthPort).toBeUndefined();
		expect(defaults.shutdownUnreadyDelayMs).toBe(0);
		expect(loadConfig({ HEALTH_PORT: "8081", SHUTDOWN_UNREADY_DELAY_MS: "5000" })).toMatchObject({ healthPort: 8081, shutdownUnreadyDelayMs: 5000 });
		expect(() => loadConfig({ HEALTH_PORT: "http" })).toThrow(ConfigError);
		expect(() => loadConfig({ HEALTH_PORT: "70000" })).toThrow(/HEALTH_PORT must be a port number/);
		expect(() => loadConfig({ SHUTDOWN_UNREADY_DELAY_MS: "-1" })).toThrow(/SHUTDOWN_UNREADY_DELAY_MS/);
	});
});
