import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { traceIdOf } from "../../lib/request-context";
import { relaxedRateLimits, withProcesses } from "../helpers/fixtures";
import { apiClient, signUp, type ApiClient, type Session } from "../helpers/http";
import { clusterEnv, uniqueNamespace } from "../helpers/infra";
import { simulatorProviders } from "../helpers/nodes";
import { waitFor } from "../helpers/wait";
import { startZipkinReceiver, type ZipkinReceiver, type ZipkinSpan } from "../helpers/zipkin";

// Three nodes over the real NATS (gateway and the small services; conversation; llm), tracing to a
// Zipkin collector run by this test, plus a second gateway that samples nothing.
const cluster = withProcesses({ label: "tracing", database: true, simulator: { outputTokens: 6 } });
let zipkin: ZipkinReceiver;
let gw: { url: string; api: ApiClient };
let unsampledGw: { url: string; api: ApiClient };
let user: Session;
let conversationId: string;

beforeAll(async () => {
	zipkin = await startZipkinReceiver();
	const env = {
		...clusterEnv(uniqueNamespace("tracing"), cluster.db.url),
		LLM_PROVIDERS: simulatorProviders(cluster.sim),
		RATE_LIMITS: relaxedRateLimits(),
		TRACING_EXPORTER: "zipkin",
		TRACING_ENDPOINT: zipkin.url
	};
	const front = cluster.spawn({ ...env, SERVICES: "gateway,user,quota,moderation,tool", NODE_ID: "trace-gw" });
	const quiet = cluster.spawn({ ...env, SERVICES: "gateway", NODE_ID: "trace-gw0", TRACING_SAMPLE_RATE: "0" });
	cluster.spawn({ ...env, SERVICES: "conversation", NODE_ID: "trace-conv" });
	cluster.spawn({ ...env, SERVICES: "llm", NODE_ID: "trace-llm" });
	const [port, quietPort] = await Promise.all([front.httpPort(60_000), quiet.httpPort(60_000)]);
	gw = { url: `http://127.0.0.1:${port}`, api: apiClient(`http://127.0.0.1:${port}`) };
	unsampledGw = { url: `http://127.0.0.1:${quietPort}`, api: apiClient(`http://127.0.0.1:${quietPort}`) };
	user = await waitFor(() => signUp(gw.api, "tracing"), { timeoutMs: 30_000, what: "sign-up through the cluster" });
	// Ready once a conversation can be made (conversation node) and a model answers (llm node), on both gateways.
	for (const g of [gw, unsampledGw]) {
		await waitFor(async () => (await g.api.get("/ready")).status === 200, { timeoutMs: 30_000, what: "gateway ready" });
		conversationId = await waitFor(
			async () => {
				const res = await g.api.post<{ id: string }>("/api/conversations", { token: user.accessToken, body: {} });
				return res.status === 201 ? res.body.id : undefined;
			},
			{ timeoutMs: 30_000, what: "the conversation node" }
		);
	}
}, 90_000);

afterAll(() => zipkin?.close());

/** A whole turn over SSE, with this request id: resolves once the answer has ended. */
async function turn(base: string, requestId: string, content: string): Promise<Response> {
	const res = await fetch(`${base}/api/conversations/${conversationId}/messages`, {
		method: "POST",
		headers: { authorization: `Bearer ${user.accessToken}`, "content-type": "application/json", accept: "text/event-stream", "x-request-id": requestId },
		body: JSON.stringify({ content })
	});
	const body = await res.text();
	expect(body).toContain("generation:done");
	return res;
}

const spansOf = (requestId: string) => zipkin.spans.filter(s => s.tags.requestID === requestId);
const named = (spans: ZipkinSpan[], name: string) => spans.find(s => s.tags["action.name"] === name);

describe("tracing across nodes", () => {
	it("one chat turn is one trace: spans from the gateway, conversation and llm nodes, linked parent to child, tagged with the request id", async () => {
		const requestId = "turn-trace-0001";
		const res = await turn(gw.url, requestId, "a question worth tracing");
		expect(res.headers.get("x-request-id")).toBe(requestId);

		const spans = await waitFor(
			() => {
				const found = spansOf(requestId);
				return named(found, "llm.stream") && named(found, "gateway.rest") && named(found, "conversation.send") ? found : undefined;
			},
			{ timeoutMs: 15_000, what: "the turn's spans at the collector" }
		);
		expect(zipkin.rejected).toEqual([]);
		// One trace, whose id is the request id in Zipkin's form.
		expect(new Set(spans.map(s => s.traceId))).toEqual(new Set([traceIdOf(requestId)]));
		expect(new Set(spans.map(s => s.tags.nodeID))).toEqual(new Set(["trace-gw", "trace-conv", "trace-llm"]));

		// A tree: one root (the HTTP request), every other span's parent is in the trace.
		const ids = new Set(spans.map(s => s.id));
		const roots = spans.filter(s => s.parentId === undefined);
		expect(roots.map(s => s.tags["action.name"])).toEqual(["gateway.rest"]);
		for (const s of spans) if (s.parentId !== undefined) expect(ids.has(s.parentId), `${s.name} has its parent in the trace`).toBe(true);

		// Parent and child on different nodes: gateway → conversation.send → llm.stream (the turn's model call).
		const rest = named(spans, "gateway.rest") as ZipkinSpan;
		const send = named(spans, "conversation.send") as ZipkinSpan;
		const stream = named(spans, "llm.stream") as ZipkinSpan;
		// Named so a collector can group requests: no ids, no query.
		expect(rest.name).toBe("POST /api/conversations/:id/messages");
		expect(send.parentId).toBe(rest.id);
		expect(send.tags).toMatchObject({ nodeID: "trace-conv", callerNodeID: "trace-gw", remoteCall: "true" });
		expect(stream.parentId).toBe(send.id);
		expect(stream.tags).toMatchObject({ nodeID: "trace-llm", callerNodeID: "trace-conv", remoteCall: "true" });
		expect(stream.localEndpoint?.serviceName).toBe("llm");
		// The turn's other calls, made after send answered, are in the same trace too.
		expect(named(spans, "quota.settle")?.parentId).toBe(send.id);

		// No message text, password or token in the trace store.
		const stored = JSON.stringify(spans);
		expect(stored).not.toContain("a question worth tracing");
		expect(stored).not.toContain(user.accessToken);
	});

	it("a request id that is too long or not plain is replaced with a fresh one, not echoed", async () => {
		for (const bad of ["bad id <script>", "x".repeat(65), "new\u00e9line"]) {
			const res = await fetch(`${gw.url}/api/me`, { headers: { authorization: `Bearer ${user.accessToken}`, "x-request-id": bad } });
			expect(res.status).toBe(200);
			const echoed = res.headers.get("x-request-id");
			expect(echoed).not.toBe(bad);
			expect(echoed).toMatch(/^[0-9a-f-]{36}$/);
		}
		// And in the trace: the replaced id, never the client's.
		const res = await fetch(`${gw.url}/api/me`, { headers: { authorization: `Bearer ${user.accessToken}`, "x-request-id": "bad id <script>" } });
		const fresh = res.headers.get("x-request-id") as string;
		await waitFor(() => named(spansOf(fresh), "user.me"), { timeoutMs: 15_000, what: "the replaced id's spans" });
		expect(zipkin.spans.some(s => s.tags.requestID === "bad id <script>")).toBe(false);
	});

	it("with sample rate 0 a request sends no span from any node", async () => {
		const unsampled = "turn-unsampled-0001";
		const res = await turn(unsampledGw.url, unsampled, "nobody traces this one");
		expect(res.headers.get("x-request-id")).toBe(unsampled);
		// A sampled turn after it: once its model call's span has arrived, every node has flushed past the unsampled one.
		const after = "turn-sampled-after-0001";
		await turn(gw.url, after, "this one is traced");
		await waitFor(() => named(spansOf(after), "llm.stream") && named(spansOf(after), "conversation.send"), {
			timeoutMs: 15_000,
			what: "the later turn's spans"
		});
		expect(spansOf(unsampled)).toEqual([]);
	});
});
