import fs from "node:fs/promises";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { withProcesses } from "../helpers/fixtures";
import { spawnProcess, waitUntil, type NodeProcess } from "../helpers/processes";

// A newcomer's first run: the README's start command with no TRANSPORTER, DATABASE_URL,
// REDIS_URL or LLM_PROVIDERS in its environment (the spawn helper passes only PATH, HOME and
// what the test names), so nothing but the embedded defaults can serve it.
const cluster = withProcesses({ label: "embedded", dataDir: true });
let dataDir: string;
beforeAll(() => {
	dataDir = cluster.dataDir;
});

function startChatmesh(): NodeProcess {
	const proc = spawnProcess({ command: ["npm", "start"], env: { DATA_DIR: dataDir, NODE_ENV: "development" }, group: true });
	cluster.procs.push(proc);
	return proc;
}

/** SIGTERM to the node process itself, as an orchestrator would; npm then exits with its code. */
async function terminate(proc: NodeProcess): Promise<number | string> {
	const match = await proc.waitForOutput(/chatmesh listening on \S+ \(pid (\d+)\)/);
	process.kill(Number(match[1]), "SIGTERM");
	return proc.exited;
}

interface ReadyBody {
	status: string;
	checks: Record<string, { status: string; detail: string }>;
}

describe("npm start on the embedded defaults", () => {
	it("serves /health and a green /ready within 20 s on the first start, then stops gracefully on SIGTERM", async () => {
		const t0 = Date.now();
		const proc = startChatmesh();
		const port = await proc.httpPort(20_000);
		const base = `http://127.0.0.1:${port}`;

		const health = await fetch(`${base}/health`);
		expect(health.status).toBe(200);
		expect(await health.json()).toMatchObject({ status: "ok" });

		let body: ReadyBody | undefined;
		await waitUntil(
			async () => {
				const res = await fetch(`${base}/ready`);
				body = (await res.json()) as ReadyBody;
				return res.status === 200;
			},
			20_000 - (Date.now() - t0)
		);
		expect(Date.now() - t0).toBeLessThan(20_000);
		expect(body?.status).toBe("ready");
		expect(body?.checks.database).toMatchObject({ status: "ok", detail: "embedded" });
		expect(body?.checks.cacher).toMatchObject({ status: "ok", detail: "memory" });
		expect(body?.checks.transporter).toMatchObject({ status: "ok" });
		expect(body?.checks.transporter.detail).toMatch(/^none/);
		expect(body?.checks.models).toMatchObject({ status: "ok", detail: "simulator" });
		expect(proc.output()).toMatch(/applied migration 0001_users/);
		await expect(fs.stat(path.join(dataDir, "pglite"))).resolves.toBeTruthy();

		expect(await terminate(proc)).toBe(0);
		expect(proc.output()).toMatch(/SIGTERM received: shutting down/);
	}, 40_000);

	it("starts again on the same data without migrating twice", async () => {
		const proc = startChatmesh();
		const port = await proc.httpPort(20_000);
		await waitUntil(async () => (await fetch(`http://127.0.0.1:${port}/ready`)).status === 200, 20_000);
		expect(proc.output()).not.toMatch(/applied migration/);
		expect(await terminate(proc)).toBe(0);
	}, 40_000);
});
