import { beforeAll, describe, expect, it } from "vitest";
import { withProcesses } from "../helpers/fixtures";
import { clusterEnv, uniqueNamespace } from "../helpers/infra";
import { spawnNode, waitUntil } from "../helpers/processes";

// A gateway process and a separate llm process find each other over the real NATS; the
// gateway's readiness follows the llm node's arrival and death.
let env: Record<string, string>;
const cluster = withProcesses({ label: "cluster", database: true });
const { procs } = cluster;

beforeAll(() => {
	env = clusterEnv(uniqueNamespace("cluster"), cluster.db.url);
});

interface ReadyBody {
	status: string;
	checks: Record<string, { status: string; detail: string }>;
}

async function ready(base: string): Promise<{ status: number; body: ReadyBody }> {
	const res = await fetch(`${base}/ready`);
	return { status: res.status, body: (await res.json()) as ReadyBody };
}

describe("gateway and llm as separate processes over NATS", () => {
	it("turns ready only once the llm node joins, and not-ready within 10 s after it is killed", async () => {
		const gateway = spawnNode({ ...env, SERVICES: "gateway", NODE_ID: "gw-1" });
		procs.push(gateway);
		const base = `http://127.0.0.1:${await gateway.httpPort()}`;

		const before = await ready(base);
		expect(before.status).toBe(503);
		expect(before.body.status).toBe("not_ready");
		expect(before.body.checks.models.status).toBe("fail");
		expect(before.body.checks.database).toMatchObject({ status: "ok", detail: "postgresql" });
		expect(before.body.checks.cacher).toMatchObject({ status: "ok", detail: "redis" });
		expect(before.body.checks.transporter).toMatchObject({ status: "ok", detail: "nats" });

		const llm = spawnNode({ ...env, SERVICES: "llm", NODE_ID: "llm-1" });
		procs.push(llm);
		await waitUntil(async () => (await ready(base)).status === 200, 30_000);
		const after = await ready(base);
		expect(after.body.status).toBe("ready");
		expect(after.body.checks.models).toMatchObject({ status: "ok", detail: "simulator" });

		llm.kill("SIGKILL");
		await llm.exited;
		const elapsed = await waitUntil(async () => (await ready(base)).status === 503, 10_000, 200);
		expect(elapsed).toBeLessThan(10_000);
		expect((await ready(base)).body.checks.models.status).toBe("fail");

		gateway.kill("SIGTERM");
		expect(await gateway.exited).toBe(0);
	}, 60_000);
});
