import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";
import { readSse } from "../helpers/chat";
import { withProcesses } from "../helpers/fixtures";
import { apiClient, signUp } from "../helpers/http";
import { REPO_ROOT, TEST_JWT_SECRET, TEST_NATS_URL, uniqueNamespace } from "../helpers/infra";
import { spawnProcess } from "../helpers/processes";
import { waitFor } from "../helpers/wait";

// The production build: `npm run build` (the README's command and the image's build step) makes
// plain JavaScript in dist/, and `node dist/server.js` (the image's CMD) runs chatmesh on the
// embedded defaults with no TypeScript loader: health, readiness, the web app, a chat turn.
const run = promisify(execFile);
const cluster = withProcesses({ label: "build", dataDir: true, simulator: {} });
const DIST = path.join(REPO_ROOT, "dist");

beforeAll(async () => {
	await run("npm", ["run", "build"], { cwd: REPO_ROOT, timeout: 60_000 });
}, 90_000);

describe("npm run build", () => {
	it("writes one plain-JavaScript bundle per entry and every migration, with no TypeScript loader in them", () => {
		for (const file of ["server.js", "simulator.js", "repl.js"]) expect(fs.existsSync(path.join(DIST, file)), file).toBe(true);
		const sources = fs.readdirSync(path.join(REPO_ROOT, "migrations")).filter(f => /^[0-9].*\.ts$/.test(f));
		const built = fs.readdirSync(path.join(DIST, "migrations")).filter(f => f.endsWith(".js"));
		expect(built.sort()).toEqual(sources.map(f => f.replace(/\.ts$/, ".js")).sort());

		const server = fs.readFileSync(path.join(DIST, "server.js"), "utf8");
		expect(server).not.toMatch(/from ["']tsx|import\(["']tsx|from ["'][^"']+\.ts["']/);
		// Packages stay in node_modules (installed with npm ci --omit=dev), not copied into the bundle.
		expect(server).toMatch(/from "moleculer"/);
	});
});

describe("node dist/server.js on the embedded defaults", () => {
	it("migrates from dist/migrations, serves /health, /ready and the web app, and answers a chat turn", async () => {
		// No TRANSPORTER, DATABASE_URL, REDIS_URL or LLM_PROVIDERS: PGlite, memory, the simulator.
		const proc = spawnProcess({ command: [process.execPath, "dist/server.js"], env: { DATA_DIR: cluster.dataDir, NODE_ENV: "development" } });
		cluster.procs.push(proc);
		const base = `http://127.0.0.1:${await proc.httpPort(40_000)}`;
		expect(proc.output()).toMatch(/applied migration 0001_users/);
		expect(proc.output()).not.toMatch(/tsx/);

		const health = await fetch(`${base}/health`);
		expect(health.status).toBe(200);
		expect(await health.json()).toMatchObject({ status: "ok" });
		await waitFor(async () => (await fetch(`${base}/ready`)).status === 200, { timeoutMs: 20_000, what: "/ready 200" });

		const page = await fetch(`${base}/`);
		expect(page.status).toBe(200);
		expect(await page.text()).toMatch(/<html/i);

		const api = apiClient(base);
		const user = await signUp(api, "build");
		const conv = await api.post<{ id: string }>("/api/conversations", { token: user.accessToken, body: {} });
		expect(conv.status).toBe(201);
		const res = await fetch(`${base}/api/conversations/${conv.body.id}/messages`, {
			method: "POST",
			headers: { authorization: `Bearer ${user.accessToken}`, "content-type": "application/json", accept: "text/event-stream" },
			body: JSON.stringify({ content: "hello from the production build" }),
			signal: AbortSignal.timeout(30_000)
		});
		expect(res.status).toBe(200);
		const frames = await readSse(res);
		expect(frames.at(-1)?.data).toBe("[DONE]");
		const events = frames.slice(0, -1).map(f => JSON.parse(f.data) as { type: string; delta?: string });
		expect(events.filter(e => e.type === "generation:chunk").length).toBeGreaterThan(0);
		expect(events.at(-1)?.type).toBe("generation:done");

		proc.kill("SIGTERM");
		expect(await proc.exited).toBe(0);
	}, 80_000);
});

describe("node dist/server.js as one role of a cluster, probed the way the image's HEALTHCHECK does", () => {
	it("an llm node over NATS answers on HEALTH_PORT, and dist/healthcheck.js passes on it and fails once it is gone", async () => {
		const env = {
			NODE_ENV: "production",
			LOG_FORMAT: "json",
			JWT_SECRET: TEST_JWT_SECRET,
			SERVICES: "llm",
			TRANSPORTER: TEST_NATS_URL,
			NAMESPACE: uniqueNamespace("build"),
			LLM_PROVIDERS: JSON.stringify([{ name: "sim", baseURL: cluster.sim.baseURL, models: ["sim-small"] }])
		};
		const proc = spawnProcess({ command: [process.execPath, "dist/server.js"], env: { ...env, HEALTH_PORT: "0" } });
		cluster.procs.push(proc);
		const port = (await proc.waitForOutput(/Health listener on http:\/\/[^:]+:(\d+)/, 40_000))[1];
		await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/ready`)).status === 200, { timeoutMs: 20_000, what: "/ready 200" });

		const probe = (extra: string[] = []) =>
			run(process.execPath, ["dist/healthcheck.js", ...extra], {
				cwd: REPO_ROOT,
				env: { PATH: process.env.PATH ?? "", ...env, HEALTH_PORT: port },
				timeout: 20_000
			}).then(
				() => 0,
				(err: { code: number }) => err.code
			);
		expect(await probe()).toBe(0);
		expect(await probe(["live"])).toBe(0);

		proc.kill("SIGTERM");
		expect(await proc.exited).toBe(0);
		expect(await probe()).toBe(1);
	}, 80_000);
});
