import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { traceIdOf } from "../../lib/request-context";
import { relaxedRateLimits, withProcesses } from "../helpers/fixtures";
import { openSocket } from "../helpers/chat";
import { apiClient, signUp, type ApiClient, type Session } from "../helpers/http";
import { clusterEnv, uniqueNamespace } from "../helpers/infra";
import type { NodeProcess } from "../helpers/processes";
import { waitFor } from "../helpers/wait";
import { startZipkinReceiver, type ZipkinReceiver } from "../helpers/zipkin";

// Gateway, conversation and llm on three processes over the real NATS, logging JSON at debug, tracing
// on. The provider (the simulator) is given an API key that must never appear in any log.
const cluster = withProcesses({ label: "logging", database: true, simulator: { outputTokens: 6 } });
const API_KEY = `sk-test-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
let zipkin: ZipkinReceiver;
let nodes: { gw: NodeProcess; conv: NodeProcess; llm: NodeProcess };
let gw: { url: string; api: ApiClient };
let user: Session;
let conversationId: string;

interface LogLine {
	level: string;
	msg: string;
	nodeID: string;
	requestId?: string;
	traceId?: string;
	[field: string]: unknown;
}

beforeAll(async () => {
	zipkin = await startZipkinReceiver();
	const env = {
		...clusterEnv(uniqueNamespace("logging"), cluster.db.url),
		LLM_PROVIDERS: JSON.stringify([{ name: "sim", baseURL: cluster.sim.baseURL, apiKey: API_KEY, models: ["sim-small", "sim-large"] }]),
		RATE_LIMITS: relaxedRateLimits(),
		LOG_FORMAT: "json",
		LOG_LEVEL: "debug",
		TRACING_EXPORTER: "zipkin",
		TRACING_ENDPOINT: zipkin.url
	};
	nodes = {
		gw: cluster.spawn({ ...env, SERVICES: "gateway,user,quota,moderation,tool", NODE_ID: "log-gw" }),
		conv: cluster.spawn({ ...env, SERVICES: "conversation", NODE_ID: "log-conv" }),
		llm: cluster.spawn({ ...env, SERVICES: "llm", NODE_ID: "log-llm" })
	};
	const port = await nodes.gw.httpPort(60_000);
	// The conversation node calls the other two: it must know them before the first turn.
	await Promise.all([nodes.conv.waitForOutput(/Node 'log-gw' connected/, 60_000), nodes.conv.waitForOutput(/Node 'log-llm' connected/, 60_000)]);
	gw = { url: `http://127.0.0.1:${port}`, api: apiClient(`http://127.0.0.1:${port}`) };
	await waitFor(async () => (await gw.api.get("/ready")).status === 200, { timeoutMs: 30_000, what: "gateway ready" });
	user = await signUp(gw.api, "logging");
	conversationId = await waitFor(
		async () => {
			const res = await gw.api.post<{ id: string }>("/api/conversations", { token: user.accessToken, body: {} });
			return res.status === 201 ? res.body.id : undefined;
		},
		{ timeoutMs: 30_000, what: "the conversation node" }
	);
}, 90_000);

afterAll(() => zipkin?.close());

/** Every whole JSON line every node wrote so far (each stdout line is one object). */
function lines(): LogLine[] {
	return Object.values(nodes).flatMap(n =>
		n
			.output()
			.split("\n")
			.slice(0, -1)
			.filter(l => l.startsWith("{"))
			.map(l => JSON.parse(l) as LogLine)
	);
}

const ofRequest = (requestId: string) => lines().filter(l => l.requestId === requestId);
const FAILURE_LEVELS = new Set(["warn", "error", "fatal"]);

async function sseTurn(requestId: string, content: string, model?: string): Promise<string> {
	const res = await fetch(`${gw.url}/api/conversations/${conversationId}/messages`, {
		method: "POST",
		headers: { authorization: `Bearer ${user.accessToken}`, "content-type": "application/json", accept: "text/event-stream", "x-request-id": requestId },
		body: JSON.stringify({ content, ...(model ? { model } : {}) })
	});
	expect(res.headers.get("x-request-id")).toBe(requestId);
	return res.text();
}

describe("JSON logs", () => {
	it("every line of one turn, on the gateway, conversation and llm nodes, carries its requestId and traceId", async () => {
		const requestId = "log-turn-0001";
		const answer = await sseTurn(requestId, "follow me across the nodes");
		expect(answer, JSON.stringify(lines().filter(l => FAILURE_LEVELS.has(l.level)))).toContain("generation:done");
		const mine = await waitFor(
			() => {
				const found = ofRequest(requestId);
				const ended = found.some(l => l.msg === "Turn ended");
				return ended && ["log-gw", "log-conv", "log-llm"].every(node => found.some(l => l.nodeID === node)) ? found : undefined;
			},
			{ timeoutMs: 10_000, what: "lines of the turn from the three nodes, to its end" }
		);
		// What each node said about it: the gateway's request, the conversation's turn, the llm's routing.
		expect(mine.some(l => l.nodeID === "log-gw" && l.mod === "gateway")).toBe(true);
		expect(mine.find(l => l.nodeID === "log-conv" && l.msg === "Turn ended")).toMatchObject({ status: "completed" });
		expect(mine.some(l => l.nodeID === "log-llm" && l.mod === "llm")).toBe(true);
		for (const line of mine) expect(line.traceId, JSON.stringify(line)).toBe(traceIdOf(requestId));
		// The same trace id leads to the trace at the collector.
		await waitFor(() => zipkin.spans.some(s => s.traceId === traceIdOf(requestId) && s.tags.nodeID === "log-llm"), {
			timeoutMs: 15_000,
			what: "the turn's trace"
		});
	});

	it("a socket.io turn is one request too: the event's calls and the turn log under one id on every node", async () => {
		const socket = await openSocket(gw.url, user.accessToken);
		try {
			const ack = await socket.timeout(5000).emitWithAck("chat:send", { conversationId, content: "over a socket" });
			const ended = await waitFor(() => lines().find(l => l.msg === "Turn ended" && l.generationId === ack.generationId), {
				timeoutMs: 10_000,
				what: "the socket turn's end"
			});
			expect(ended.requestId).toMatch(/^[0-9a-f-]{36}$/);
			const mine = ofRequest(ended.requestId as string);
			expect(new Set(mine.map(l => l.nodeID))).toEqual(new Set(["log-gw", "log-conv", "log-llm"]));
		} finally {
			socket.disconnect();
		}
	});

	it("a failing provider is one WARN line across the cluster, with its cause and type, no stack and no API key", async () => {
		cluster.sim.configure({ errorStatus: 500 });
		try {
			const sse = await sseTurn("log-fail-turn", "this one fails upstream");
			expect(sse).toContain("UPSTREAM_ERROR");
			// The OpenAI-compatible path, which used to log the same failure three times.
			const v1 = await gw.api.post("/v1/chat/completions", {
				token: user.accessToken,
				headers: { "x-request-id": "log-fail-v1" },
				body: { model: "sim-small", messages: [{ role: "user", content: "fail again" }] }
			});
			expect(v1.status).toBe(502);
		} finally {
			cluster.sim.resetConfig();
		}
		// The turn's end is logged by the conversation node after the failure: every node has had its say.
		await waitFor(() => ofRequest("log-fail-turn").some(l => l.msg === "Turn ended"), { timeoutMs: 10_000, what: "the failed turn's end" });
		for (const requestId of ["log-fail-turn", "log-fail-v1"]) {
			const failures = ofRequest(requestId).filter(l => FAILURE_LEVELS.has(l.level));
			expect(failures, `failure lines of ${requestId}`).toHaveLength(1);
			const [line] = failures;
			expect(line).toMatchObject({ level: "warn", nodeID: "log-llm", msg: "Model provider failed", provider: "sim", type: "UPSTREAM_ERROR", status: 500 });
			expect(line.cause).toContain("Simulated upstream error");
			expect(JSON.stringify(line)).not.toMatch(/"stack"|\n\s+at /);
		}
		// Nor any other line about it, with or without a request id.
		const aboutIt = lines().filter(l => FAILURE_LEVELS.has(l.level) && JSON.stringify(l).includes("Simulated upstream error"));
		expect(aboutIt).toHaveLength(2);
		const everything = Object.values(nodes)
			.map(n => n.output())
			.join("\n");
		expect(everything).not.toContain(API_KEY);
	});

	it("client errors are not failures: no WARN or ERROR line for a 404 or a 422", async () => {
		const missing = await gw.api.get("/api/conversations/00000000-0000-4000-8000-000000000000", {
			token: user.accessToken,
			headers: { "x-request-id": "log-client-404" }
		});
		expect(missing.status).toBe(404);
		const invalid = await gw.api.post("/api/conversations", { token: user.accessToken, headers: { "x-request-id": "log-client-422" }, body: { title: 42 } });
		expect(invalid.status).toBe(422);
		const wrongPassword = await gw.api.post("/api/auth/login", {
			headers: { "x-request-id": "log-client-401" },
			body: { email: user.email, password: "not the password at all" }
		});
		expect(wrongPassword.status).toBe(401);
		// The gateway logged each request (at debug) in its scope; none of them at WARN or above.
		await waitFor(() => ["log-client-404", "log-client-422", "log-client-401"].every(id => ofRequest(id).length > 0), { what: "the requests' debug lines" });
		for (const id of ["log-client-404", "log-client-422", "log-client-401"]) expect(ofRequest(id).filter(l => FAILURE_LEVELS.has(l.level))).toEqual([]);
		expect(lines().some(l => JSON.stringify(l).includes("not the password at all"))).toBe(false);
	});
});
