import net from "node:net";
import os from "node:os";
import { ServiceBroker } from "moleculer";
import { describe, expect, it } from "vitest";
import { TEST_NATS_URL, uniqueNamespace } from "../helpers/infra";
import { type TestNode, withChatNode } from "../helpers/fixtures";
import { collectGeneration, openSocket } from "../helpers/chat";
import { signUp } from "../helpers/http";
import { waitUntil } from "../helpers/processes";
import { waitFor } from "../helpers/wait";
import { registerJobKind } from "../../services/jobs/registry";
import { testFailKind, testQuickKind } from "../jobs/engine-kinds";

// Kinds of the engine's tests: one that always fails retryably (4 attempts, then dead), one quick.
registerJobKind(testFailKind);
registerJobKind(testQuickKind);

// METRICS_PORT turns on Moleculer's Prometheus reporter; a scrape sees the node's requests and,
// batched once a second, the packets it exchanged over NATS with another broker.
const namespace = uniqueNamespace("metrics");
let node: TestNode;
let port: number;

const freePort = () =>
	new Promise<number>(resolve => {
		const server = net.createServer().listen(0, "127.0.0.1", () => {
			const { port: p } = server.address() as net.AddressInfo;
			server.close(() => resolve(p));
		});
	});

const fixture = withChatNode({
	label: "metrics",
	models: ["sim-small", "sim-medium"],
	nats: true,
	env: async () => {
		port = await freePort();
		return { NAMESPACE: namespace, METRICS_PORT: String(port), METRICS_HOST: "127.0.0.1", JOBS_POLL_MS: "200" };
	},
	started: f => {
		node = f.node;
	}
});

describe("Prometheus metrics", () => {
	it("are served on METRICS_PORT and count the node's requests", async () => {
		for (let i = 0; i < 3; i++) expect((await fetch(`${node.baseUrl}/ready`)).status).toBe(200);
		const res = await fetch(`http://127.0.0.1:${port}/metrics`);
		expect(res.status).toBe(200);
		const text = await res.text();
		expect(text).toMatch(/moleculer_request_total\{[^}]*action="gateway\.ready"[^}]*\} [3-9]/);
		expect(text).toMatch(/moleculer_request_total\{[^}]*action="llm\.health"/);
	});

	it("count the packets exchanged with another node, by packet type", async () => {
		const caller = new ServiceBroker({
			namespace,
			nodeID: "metrics-caller",
			transporter: { type: "NATS", options: { servers: TEST_NATS_URL } },
			logger: false
		});
		await caller.start();
		try {
			await caller.waitForServices(["llm"], 10_000);
			for (let i = 0; i < 5; i++) await caller.call("llm.models", {}, { nodeID: node.broker.nodeID });
		} finally {
			await caller.stop();
		}
		const series = (text: string, name: string, type?: string) => {
			const line = text.split("\n").find(l => l.startsWith(`${name}{`) && (type === undefined || l.includes(`type="${type}"`)));
			return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
		};
		let text = "";
		await waitUntil(async () => {
			text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
			return series(text, "moleculer_transit_receive_total", "REQ") >= 5;
		}, 5000);
		expect(series(text, "moleculer_transit_receive_total", "REQ")).toBeGreaterThanOrEqual(5);
		expect(series(text, "moleculer_transit_publish_total", "RES")).toBeGreaterThanOrEqual(5);
		expect(series(text, "moleculer_transporter_packets_received_total")).toBeGreaterThanOrEqual(5);
		expect(series(text, "moleculer_transporter_packets_sent_bytes")).toBeGreaterThan(0);
	});
});

describe("chatmesh metrics", () => {
	const scrape = async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text();

	it("count a chat turn under the seed's names, with route templates and no leaky series", async () => {
		const user = await signUp(fixture.api, "metrics");
		const socket = await openSocket(node.baseUrl, user.accessToken);
		fixture.sockets.push(socket);
		const ack = await socket.timeout(5000).emitWithAck("chat:send", { content: "count me", model: "sim-small" });
		const end = await collectGeneration(socket, ack.generationId).ended;
		expect(end.name).toBe("generation:done");
		const res = await fetch(`${node.baseUrl}/api/conversations/${ack.conversationId}`, { headers: { authorization: `Bearer ${user.accessToken}` } });
		expect(res.status).toBe(200);

		// The OpenAI-compatible surface counts too, streamed or not.
		const v1 = (stream: boolean) =>
			fetch(`${node.baseUrl}/v1/chat/completions`, {
				method: "POST",
				headers: { authorization: `Bearer ${user.accessToken}`, "content-type": "application/json" },
				body: JSON.stringify({ model: "sim-medium", stream, messages: [{ role: "user", content: "count me too" }] })
			}).then(r => r.text());
		await v1(false);
		await v1(true);

		let text = "";
		await waitUntil(async () => {
			text = await scrape();
			return /llm_requests_total\{[^}]*model="sim-medium"[^}]*\} 2/.test(text);
		}, 5000);
		expect(text).toMatch(/^llm_requests_total\{[^}]*model="sim-small",status="completed",provider="sim"\} 1$/m);
		expect(text).toMatch(/^llm_requests_total\{[^}]*model="sim-medium",status="completed",provider="sim"\} 2$/m);
		expect(text).toMatch(/^llm_latency_seconds_count\{[^}]*model="sim-small",provider="sim"\} 1$/m);
		expect(text).toMatch(/^llm_latency_seconds_bucket\{[^}]*model="sim-small",provider="sim",le="\+Inf"\} 1$/m);
		expect(text).toMatch(/^chatmesh_http_requests_total\{[^}]*route="\/v1\/chat\/completions",method="POST",status="200"\} 2$/m);
		expect(text).toMatch(/^chatmesh_llm_time_to_first_token_seconds_count\{[^}]*model="sim-small"\} 1$/m);
		expect(text).toMatch(/^chatmesh_llm_inter_token_seconds_count\{[^}]*model="sim-small"\} [1-9]/m);
		expect(text).toMatch(/^chatmesh_llm_completion_tokens_total\{[^}]*model="sim-small"\} [1-9]/m);
		expect(text).toMatch(/^active_conversations\{[^}]*\} 0$/m);
		expect(text).toMatch(/^chatmesh_socketio_connections\{[^}]*\} 1$/m);
		expect(text).toMatch(/^chatmesh_socketio_events_total\{[^}]*event="chat:send"\} 1$/m);
		expect(text).toMatch(/^chatmesh_http_requests_total\{[^}]*route="\/api\/conversations\/:id",method="GET",status="200"\} 1$/m);
		expect(text).toMatch(/^chatmesh_moderation_verdicts_total\{[^}]*verdict="allow",direction="input"\} [1-9]/m);
		expect(text).toMatch(/^chatmesh_llm_breaker_state\{[^}]*provider="sim",state="closed"\} 1$/m);
		expect(text).toMatch(/^chatmesh_db_pool_waiting\{[^}]*\} 0$/m);
		expect(text).toMatch(/^chatmesh_generation_log_events_written_total\{[^}]*\} [1-9]/m);
		expect(text).toMatch(/^chatmesh_process_cpu_seconds_total\{[^}]*\} [0-9.]+$/m);
		expect(text).not.toContain(ack.conversationId);
		expect(text).not.toContain(user.userId);
		for (const leaky of ["process_arguments", "os_user_homedir", "os_network_address", "os_hostname", "process_pid"])
			expect(text).not.toMatch(new RegExp(`^${leaky}[{ ]`, "m"));
	});

	it("listen on METRICS_HOST only", async () => {
		const reporters = (node.broker.metrics as unknown as { reporter: Array<{ server: net.Server }> }).reporter;
		expect((reporters[0].server.address() as net.AddressInfo).address).toBe("127.0.0.1");
		const outside = Object.values(os.networkInterfaces())
			.flat()
			.find(a => a && a.family === "IPv4" && !a.internal)?.address;
		if (!outside) return; // no other address to try from here; the bound address above holds
		await expect(fetch(`http://${outside}:${port}/metrics`, { signal: AbortSignal.timeout(2000) })).rejects.toThrow();
	});

	it("count a job's retries until it is dead, a cancel while running, and show the dead job in the queue depth", async () => {
		const user = await signUp(fixture.api, "metrics-jobs");
		const token = user.accessToken;
		const submit = async (kind: string, input: unknown) => {
			const res = await fixture.api.post<{ jobId: string }>("/api/jobs", { token, body: { kind, input } });
			expect(res.status).toBe(202);
			return res.body.jobId;
		};
		const state = async (id: string) => (await fixture.api.get<{ state: string }>(`/api/jobs/${id}`, { token })).body.state;
		const failing = await submit("test-fail", {});
		const slow = await submit("test-quick", { n: 1, delayMs: 3000 });
		await waitFor(async () => (await state(slow)) === "running", { timeoutMs: 10_000, intervalMs: 50, what: "the slow job running" });
		expect((await fixture.api.post(`/api/jobs/${slow}/cancel`, { token })).status).toBe(202);
		await waitFor(async () => (await state(slow)) === "cancelled", { timeoutMs: 10_000, intervalMs: 100, what: "the slow job cancelled" });
		await waitFor(async () => (await state(failing)) === "dead", { timeoutMs: 20_000, intervalMs: 100, what: "the failing job dead" });

		const value = (text: string, name: string, labels: string) => Number(text.match(new RegExp(`^${name}\\{[^}]*${labels}\\} ([0-9.e+-]+)$`, "m"))?.[1]);
		// The depth is read at most every few seconds: wait for a read after the job died.
		const text = await waitFor(
			async () => {
				const t = await scrape();
				return value(t, "chatmesh_jobs_depth", 'kind="test-fail",state="dead"') === 1 ? t : undefined;
			},
			{ timeoutMs: 10_000, intervalMs: 500, what: "the dead job in chatmesh_jobs_depth" }
		);
		expect(value(text, "chatmesh_jobs_retries_total", 'kind="test-fail"')).toBe(3);
		expect(value(text, "chatmesh_jobs_finished_total", 'kind="test-fail",state="dead"')).toBe(1);
		expect(value(text, "chatmesh_jobs_run_seconds_count", 'kind="test-fail"')).toBe(4);
		// Each attempt recorded its start as a step.
		expect(value(text, "chatmesh_jobs_steps_total", 'kind="test-fail"')).toBe(4);
		expect(value(text, "chatmesh_jobs_cancels_total", 'kind="test-quick",when="running"')).toBe(1);
		expect(value(text, "chatmesh_jobs_finished_total", 'kind="test-quick",state="cancelled"')).toBe(1);
		expect(value(text, "chatmesh_jobs_depth", 'kind="test-quick",state="running"')).toBe(0);
		expect(value(text, "chatmesh_jobs_depth_read_failures_total", "")).toBe(0);
		expect(text).not.toContain(failing);
		expect(text).not.toContain(user.userId);
	});
});
