import fs from "node:fs/promises";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import OpenAI from "openai";
import type { Socket } from "socket.io-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startSimulator, type SimulatorHandle } from "../../simulator/simulator";
import { collectGeneration, openSocket } from "../helpers/chat";
import { relaxedRateLimits, withProcesses } from "../helpers/fixtures";
import { apiClient, signUp, type ApiClient, type Session } from "../helpers/http";
import { clusterEnv, REPO_ROOT, uniqueNamespace } from "../helpers/infra";
import { spawnProcess, waitUntil } from "../helpers/processes";
import { waitFor } from "../helpers/wait";

// Debian's Prometheus scrapes a four-node cluster (gateway, core, llm and a jobs worker as separate
// processes over NATS), each with its own METRICS_PORT, every second. The test drives chats that
// complete, fail (a provider that answers 500), are cancelled and are blocked by the content
// policy, then runs report and export jobs, and asks Prometheus's HTTP API: the seed's metrics and
// the jobs metrics have the expected series and counts, and every query of the Grafana dashboard
// returns data.
const PROMETHEUS = "/usr/bin/prometheus";
const cluster = withProcesses({ label: "prometheus", database: true, simulator: { outputTokens: 24 } });
const namespace = uniqueNamespace("prom");
const PROMPT_TO_BLOCK = "Tell me a long story about the sea and the mountains.";
let broken: SimulatorHandle;
let gateway: { url: string; api: ApiClient };
let promUrl: string;
let denied = "";
const sockets: Socket[] = [];
let tmp: string;
let ports: { gateway: number; core: number; llm: number; jobs: number; prometheus: number };
let user: Session;

const freePort = () =>
	new Promise<number>(resolve => {
		const server = net.createServer().listen(0, "127.0.0.1", () => {
			const { port } = server.address() as net.AddressInfo;
			server.close(() => resolve(port));
		});
	});

interface PromSample {
	metric: Record<string, string>;
	value: [number, string];
}

async function query(expr: string): Promise<PromSample[]> {
	const res = await fetch(`${promUrl}/api/v1/query?${new URLSearchParams({ query: expr })}`, { signal: AbortSignal.timeout(5000) });
	const body = (await res.json()) as { status: string; error?: string; data: { resultType: string; result: PromSample[] } };
	if (body.status !== "success") throw new Error(`query ${expr} failed: ${body.error}`);
	return body.data.result;
}

const sumOf = (samples: PromSample[]) => samples.reduce((sum, s) => sum + Number(s.value[1]), 0);

beforeAll(async () => {
	tmp = await fs.mkdtemp(path.join(os.tmpdir(), "chatmesh-prometheus-"));
	// A provider that answers every chat request with a 500.
	broken = await startSimulator({ models: ["sim-broken"], errorStatus: 500 });
	// A three-word phrase the simulator writes into its answer to this prompt becomes a denied one,
	// so that answer is blocked on its way out.
	const direct = await new OpenAI({ baseURL: cluster.sim.baseURL, apiKey: "x" }).chat.completions.create({
		model: "sim-small",
		messages: [{ role: "user", content: PROMPT_TO_BLOCK }]
	});
	const words = (direct.choices[0].message.content ?? "").split(" ");
	denied = words.slice(8, 11).join(" ");
	expect(denied.split(" ")).toHaveLength(3);

	ports = { gateway: await freePort(), core: await freePort(), llm: await freePort(), jobs: await freePort(), prometheus: await freePort() };
	const env = {
		...clusterEnv(namespace, cluster.db.url),
		LLM_PROVIDERS: JSON.stringify([
			{ name: "sim", baseURL: cluster.sim.baseURL, models: ["sim-small", "sim-medium", "sim-large"] },
			{ name: "broken", baseURL: broken.baseURL, models: ["sim-broken"] }
		]),
		MODEL_TIERS: JSON.stringify({ cheap: "sim-small", medium: "sim-medium", strong: "sim-large" }),
		RATE_LIMITS: relaxedRateLimits(),
		MODERATION_DENY_LIST: denied
	};
	const gw = cluster.spawn({ ...env, SERVICES: "gateway", NODE_ID: "prom-gateway", METRICS_PORT: String(ports.gateway) });
	cluster.spawn({ ...env, SERVICES: "user,conversation,quota,moderation,tool", NODE_ID: "prom-core", METRICS_PORT: String(ports.core) });
	cluster.spawn({ ...env, SERVICES: "llm", NODE_ID: "prom-llm", METRICS_PORT: String(ports.llm) });
	cluster.spawn({ ...env, SERVICES: "jobs", NODE_ID: "prom-jobs", METRICS_PORT: String(ports.jobs), JOBS_POLL_MS: "200" });

	const config = [
		"global:",
		"  scrape_interval: 1s",
		"  evaluation_interval: 1s",
		"scrape_configs:",
		"  - job_name: chatmesh",
		"    static_configs:",
		`      - targets: ["127.0.0.1:${ports.gateway}", "127.0.0.1:${ports.core}", "127.0.0.1:${ports.llm}", "127.0.0.1:${ports.jobs}"]`
	].join("\n");
	await fs.writeFile(path.join(tmp, "prometheus.yml"), config);
	promUrl = `http://127.0.0.1:${ports.prometheus}`;
	cluster.procs.push(
		spawnProcess({
			command: [
				PROMETHEUS,
				`--config.file=${path.join(tmp, "prometheus.yml")}`,
				`--storage.tsdb.path=${path.join(tmp, "data")}`,
				`--web.listen-address=127.0.0.1:${ports.prometheus}`,
				"--log.level=warn"
			],
			cwd: tmp
		})
	);

	const httpPort = await gw.httpPort(60_000);
	gateway = { url: `http://127.0.0.1:${httpPort}`, api: apiClient(`http://127.0.0.1:${httpPort}`) };
	await waitUntil(async () => (await gateway.api.get("/ready")).status === 200, 60_000);
	await waitUntil(async () => (await fetch(`${promUrl}/-/ready`)).ok, 30_000);
	// Every target scraped at least once.
	await waitUntil(async () => sumOf(await query('sum(up{job="chatmesh"})')) === 4, 30_000);
}, 120_000);

afterAll(async () => {
	for (const socket of sockets) socket.disconnect();
	await broken?.close();
	await fs.rm(tmp, { recursive: true, force: true });
});

async function socketFor(user: Session): Promise<Socket> {
	const socket = await openSocket(gateway.url, user.accessToken);
	sockets.push(socket);
	return socket;
}

async function chat(socket: Socket, content: string, model: string, opts: { cancelAfterChunks?: number; whileStreaming?: () => Promise<void> } = {}) {
	const ack = await socket.timeout(10_000).emitWithAck("chat:send", { content, model });
	expect(ack.error).toBeUndefined();
	const generation = collectGeneration(socket, ack.generationId, { stopAfterChunks: opts.cancelAfterChunks });
	if (opts.cancelAfterChunks !== undefined) {
		await generation.enough;
		await opts.whileStreaming?.();
		expect(await socket.timeout(10_000).emitWithAck("generation:cancel", { generationId: ack.generationId })).not.toHaveProperty("error");
	}
	const end = await Promise.race([
		generation.ended,
		new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`no end for ${ack.generationId}`)), 30_000))
	]);
	generation.stop();
	return end.payload;
}

/** Waits until every node was scraped again after now (plus a second for the nodes' terminal writes). */
async function scrapedAfterNow(what: string): Promise<void> {
	const at = Date.now() / 1000 + 1;
	await waitFor(async () => Number((await query('min(timestamp(up{job="chatmesh"}))'))[0]?.value[1]) > at, { timeoutMs: 20_000, what });
}

const ns = `namespace="${namespace}"`;

describe("metrics scraped by a real Prometheus from a four-node cluster", () => {
	it("count completed, failed, cancelled and blocked answers", async () => {
		// The gateway is ready before the core and llm nodes are known to it: wait for the actions.
		user = await waitFor(() => signUp(gateway.api, "prom"), { timeoutMs: 30_000, what: "sign-up through the cluster" });
		const token = user.accessToken;
		await waitUntil(async () => (await gateway.api.get("/api/models", { token })).status === 200, 30_000);
		await waitUntil(async () => (await gateway.api.get("/api/conversations", { token })).status === 200, 30_000);
		const socket = await socketFor(user);

		for (let i = 0; i < 3; i++) expect(await chat(socket, `hello number ${i}`, "sim-small")).toMatchObject({ status: "completed" });
		// One answer through a tool round: the model calls the calculator, then answers.
		expect(await chat(socket, 'calculator {"expression":"2+3"}', "sim-small")).toMatchObject({ status: "completed" });
		// A provider failing before its first token, five times: the fifth opens its breaker.
		for (let i = 0; i < 5; i++) expect(await chat(socket, `fail number ${i}`, "sim-broken")).toMatchObject({ status: "failed" });
		cluster.sim.configure({ outputTokens: 400, tokenIntervalMs: 20 });
		// While it streams, the nodes' own endpoints count it as live.
		const whileStreaming = async () => {
			const core = await (await fetch(`http://127.0.0.1:${ports.core}/metrics`)).text();
			expect(core).toMatch(/^active_conversations\{[^}]*\} 1$/m);
			const llm = await (await fetch(`http://127.0.0.1:${ports.llm}/metrics`)).text();
			expect(llm).toMatch(/^chatmesh_llm_generations_in_flight\{[^}]*\} 1$/m);
		};
		expect(await chat(socket, "a long answer to stop", "sim-medium", { cancelAfterChunks: 3, whileStreaming })).toMatchObject({ status: "cancelled" });
		cluster.sim.configure({ outputTokens: 80, tokenIntervalMs: 0 });
		expect(await chat(socket, PROMPT_TO_BLOCK, "sim-small")).toMatchObject({ status: "blocked" });

		await scrapedAfterNow("a scrape of every node after the chats");

		const requests = await query(`sum by (model, status, provider) (llm_requests_total{${ns}})`);
		const counts = Object.fromEntries(requests.map(s => [`${s.metric.model}/${s.metric.status}/${s.metric.provider}`, Number(s.value[1])]));
		expect(counts).toEqual({
			"sim-small/completed/sim": 4,
			"sim-broken/failed/broken": 5,
			"sim-medium/cancelled/sim": 1,
			"sim-small/blocked/sim": 1
		});
		// Counted once each, on the node that runs the turns.
		expect((await query(`llm_requests_total{${ns}}`)).every(s => s.metric.nodeID === "prom-core")).toBe(true);

		const latency = await query(`sum by (model, provider) (llm_latency_seconds_count{${ns}})`);
		expect(Object.fromEntries(latency.map(s => [`${s.metric.model}/${s.metric.provider}`, Number(s.value[1])]))).toEqual({
			"sim-small/sim": 5,
			"sim-broken/broken": 5,
			"sim-medium/sim": 1
		});
		expect(sumOf(await query(`sum(llm_latency_seconds_bucket{${ns},le="+Inf"})`))).toBe(11);
		expect(sumOf(await query(`histogram_quantile(0.5, sum by (le) (llm_latency_seconds_bucket{${ns}}))`))).toBeGreaterThan(0);

		const active = await query(`active_conversations{${ns}}`);
		expect(active.map(s => [s.metric.nodeID, Number(s.value[1])])).toEqual([["prom-core", 0]]);

		// The other families, where the events happened.
		expect(sumOf(await query(`chatmesh_llm_provider_errors_total{${ns},provider="broken",kind="UPSTREAM_ERROR"}`))).toBe(5);
		expect(sumOf(await query(`chatmesh_llm_breaker_state{${ns},provider="broken",state="open"}`))).toBe(1);
		expect(sumOf(await query(`chatmesh_tool_executions_total{${ns},tool="calculator",status="success"}`))).toBe(1);
		expect(sumOf(await query(`chatmesh_moderation_verdicts_total{${ns},check="deny_list",verdict="block",direction="output"}`))).toBeGreaterThanOrEqual(1);
		expect(sumOf(await query(`chatmesh_socketio_events_total{${ns},event="chat:send"}`))).toBe(11);
		expect(sumOf(await query(`chatmesh_http_requests_total{${ns},route="/api/auth/register",status="201"}`))).toBe(1);
		expect(sumOf(await query(`sum(chatmesh_llm_completion_tokens_total{${ns},model="sim-small"})`))).toBeGreaterThan(0);
	});

	it("count jobs by kind and final state, their runs and steps, and show the queue depth", async () => {
		const token = user.accessToken;
		// The gateway knows the jobs node once it answers the list.
		await waitUntil(async () => (await gateway.api.get("/api/jobs", { token })).status === 200, 30_000);
		const submitted: string[] = [];
		for (const body of [
			{ kind: "report", input: { prompt: "The tides of the North Sea", sections: 2 } },
			{ kind: "report", input: { prompt: "Mountain weather", sections: 2 } },
			{ kind: "export", input: {} }
		]) {
			const res = await gateway.api.post<{ jobId: string }>("/api/jobs", { token, body });
			expect(res.status).toBe(202);
			submitted.push(res.body.jobId);
		}
		for (const id of submitted) {
			const job = await waitFor(
				async () => {
					const res = await gateway.api.get<{ state: string }>(`/api/jobs/${id}`, { token });
					return ["succeeded", "failed", "cancelled", "dead"].includes(res.body.state) ? res.body : undefined;
				},
				{ timeoutMs: 30_000, intervalMs: 200, what: `job ${id} finished` }
			);
			expect(job.state).toBe("succeeded");
		}
		await scrapedAfterNow("a scrape of every node after the jobs");

		const finished = await query(`sum by (kind, state) (chatmesh_jobs_finished_total{${ns}}) > 0`);
		expect(Object.fromEntries(finished.map(s => [`${s.metric.kind}/${s.metric.state}`, Number(s.value[1])]))).toEqual({
			"report/succeeded": 2,
			"export/succeeded": 1
		});
		// Counted on the worker, and only there.
		expect((await query(`chatmesh_jobs_finished_total{${ns}}`)).every(s => s.metric.nodeID === "prom-jobs")).toBe(true);
		const runs = await query(`sum by (kind) (chatmesh_jobs_run_seconds_count{${ns}})`);
		expect(Object.fromEntries(runs.map(s => [s.metric.kind, Number(s.value[1])]))).toEqual({ report: 2, export: 1 });
		// A report of two sections: source, outline, two sections and the summary.
		expect(sumOf(await query(`chatmesh_jobs_steps_total{${ns},kind="report"}`))).toBe(10);
		expect(sumOf(await query(`chatmesh_jobs_retries_total{${ns}}`))).toBe(0);
		// The depth gauge: every kind and depth state, nothing waiting now.
		const depth = await query(`chatmesh_jobs_depth{${ns}}`);
		expect(
			depth
				.filter(s => s.metric.kind === "report")
				.map(s => s.metric.state)
				.sort()
		).toEqual(["dead", "queued", "running"]);
		expect(sumOf(depth)).toBe(0);
		expect(depth.every(s => s.metric.nodeID === "prom-jobs")).toBe(true);
		expect(sumOf(await query(`chatmesh_jobs_depth_read_failures_total{${ns}}`))).toBe(0);
	});

	it("every dashboard query returns data", async () => {
		// Every query of the dashboard, with its variables filled in, returns data.
		const dashboard = JSON.parse(await fs.readFile(path.join(REPO_ROOT, "deploy/grafana/dashboards/chatmesh.json"), "utf8")) as {
			panels: Array<{ title: string; targets?: Array<{ expr: string }> }>;
		};
		const exprs = dashboard.panels.flatMap(p => (p.targets ?? []).map(t => ({ panel: p.title, expr: t.expr })));
		expect(exprs.length).toBeGreaterThan(20);
		const empty: string[] = [];
		for (const { panel, expr } of exprs) {
			const concrete = expr
				.replaceAll("$__rate_interval", "1m")
				.replaceAll("$__interval", "5s")
				.replaceAll("$__range", "5m")
				.replaceAll("$namespace", namespace)
				.replaceAll("$model", ".*");
			if ((await query(concrete)).length === 0) empty.push(`${panel}: ${concrete}`);
		}
		expect(empty).toEqual([]);
	});
});
