import net from "node:net";
import type { Readable } from "node:stream";
import { countTokens } from "gpt-tokenizer";
import { ServiceBroker } from "moleculer";
import OpenAI from "openai";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../lib/config";
import { BadRequestError, UpstreamError } from "../../lib/errors";
import type { ChatMessage, LlmStreamLine, ToolDefinition } from "../../lib/chat-protocol";
import type { ChatmeshNode } from "../../node";
import { attachRuntime } from "../../lib/runtime";
import { extendService } from "../../lib/service";
import { brokerOptions } from "../../moleculer.config";
import { countPromptTokens } from "../../services/llm/accumulator";
import { callLlmStream } from "../../services/llm/client";
import LlmService, { type ChatResult, type LlmSettings, type StreamParams } from "../../services/llm/llm.service";
import { readLineBatches } from "../../services/llm/ndjson";
import { startSimulator, type SimulatorHandle, type SimulatorRequestLogEntry } from "../../simulator/simulator";
import { TEST_NATS_URL, uniqueNamespace } from "../helpers/infra";
import { startTestNode } from "../helpers/nodes";
import { spawnNode, waitUntil } from "../helpers/processes";

// The llm service runs on its own nodes; every call comes from a second broker over the real
// NATS, so streams, errors and the cancel broadcast all cross the transporter. The model is
// the simulator, reached over HTTP.
const namespace = uniqueNamespace("llm");
const MODELS = ["sim-small", "sim-medium", "sim-large"];
const baseEnv = { NAMESPACE: namespace, TRANSPORTER: TEST_NATS_URL, SERVICES: "llm", LOG_LEVEL: "error" };

let sim: SimulatorHandle;
let direct: OpenAI;
let caller: ServiceBroker;
const nodes: Array<{ stop(): Promise<void> }> = [];
const sims: SimulatorHandle[] = [];

function providers(...list: Array<[name: string, handle: SimulatorHandle]>): string {
	return JSON.stringify(list.map(([name, handle]) => ({ name, baseURL: handle.baseURL, models: MODELS })));
}

async function newSimulator(): Promise<SimulatorHandle> {
	const handle = await startSimulator();
	sims.push(handle);
	return handle;
}

/** Resolves once the caller can route llm actions to this node. */
async function reachable(nodeID: string, timeoutMs = 10_000): Promise<void> {
	await waitUntil(async () => Boolean(caller.registry.getActionEndpointByNodeId("llm.stream", nodeID)), timeoutMs, 20);
}

/** A chatmesh node running llm, as the server starts it. */
async function llmNode(nodeID: string, env: Record<string, string>): Promise<ChatmeshNode> {
	const node = await startTestNode({ ...baseEnv, NODE_ID: nodeID, ...env });
	nodes.push(node);
	await reachable(nodeID);
	return node;
}

/** A node whose llm service has some settings overridden, the way a deployment would extend it. */
async function llmNodeWith(nodeID: string, env: Record<string, string>, settings: Partial<LlmSettings>): Promise<ServiceBroker> {
	const config = loadConfig({ NODE_ENV: "test", ...baseEnv, NODE_ID: nodeID, ...env });
	const broker = new ServiceBroker(brokerOptions(config));
	attachRuntime(broker, { config, providers: config.providers ?? [], jwtSecret: "x".repeat(40) });
	broker.createService(extendService(LlmService, { settings }));
	await broker.start();
	nodes.push(broker);
	await reachable(nodeID);
	return broker;
}

const user = (content: string): ChatMessage[] => [{ role: "user", content }];
const params = (messages: ChatMessage[], extra: Partial<StreamParams> = {}): StreamParams => ({
	generationId: crypto.randomUUID(),
	messages,
	...extra
});

async function collect(stream: Readable): Promise<LlmStreamLine[]> {
	const lines: LlmStreamLine[] = [];
	await readLineBatches(stream, batch => lines.push(...batch));
	return lines;
}

const deltasOf = (lines: LlmStreamLine[]) => lines.flatMap(l => (l.type === "delta" ? [l.content] : []));
const chats = (handle: SimulatorHandle): SimulatorRequestLogEntry[] => handle.requests().filter(r => r.path === "/v1/chat/completions");

async function upstreamAborted(handle: SimulatorHandle): Promise<void> {
	await waitUntil(async () => chats(handle).some(r => r.aborted), 3000, 20);
}

/** What the simulator answers to these messages when asked directly (its answers are deterministic). */
async function directAnswer(messages: ChatMessage[], model = "sim-small", tools?: ToolDefinition[]) {
	const completion = await direct.chat.completions.create({
		model,
		messages: messages as OpenAI.Chat.ChatCompletionMessageParam[],
		...(tools ? { tools } : {})
	});
	return completion.choices[0]?.message;
}

beforeAll(async () => {
	sim = await newSimulator();
	direct = new OpenAI({ baseURL: sim.baseURL, apiKey: "test", maxRetries: 0 });
	caller = new ServiceBroker({ ...brokerOptions(loadConfig({ ...baseEnv, SERVICES: undefined })), nodeID: "caller" });
	await caller.start();
	await llmNode("llm-main", { LLM_PROVIDERS: providers(["sim", sim]) });
});

afterAll(async () => {
	await Promise.all(nodes.map(n => n.stop()));
	await caller?.stop();
	await Promise.all(sims.map(s => s.close()));
});

afterEach(() => {
	for (const handle of sims) {
		handle.resetConfig();
		handle.clearRequests();
	}
});

const onMain = { nodeID: "llm-main" };

describe("llm.stream across NATS", () => {
	it("arrives as strings, each chunk whole lines, the lines the provider sent together in one chunk", async () => {
		// With no pacing the simulator's tokens reach the llm node together: they travel together.
		sim.configure({ tokenIntervalMs: 0, outputTokens: 40 });
		const stream = await callLlmStream(caller, params(user("Tell me a long story"), { model: "sim-small" }), onMain);
		const chunks: unknown[] = [];
		for await (const chunk of stream) chunks.push(chunk);
		expect(chunks.every(c => typeof c === "string" && c.endsWith("\n"))).toBe(true);
		const lines = (chunks as string[])
			.join("")
			.trim()
			.split("\n")
			.map(l => JSON.parse(l) as LlmStreamLine);
		expect(deltasOf(lines)).toHaveLength(40);
		expect(lines.at(-1)).toMatchObject({ type: "end" });
		expect(chunks.length).toBeLessThan(lines.length / 2);
	});

	it("sends start, the deltas as they come, and end with the provider's usage; the text is the model's", async () => {
		sim.configure({ tokenIntervalMs: 25, outputTokens: 12 });
		const messages = user("Tell me something about streams");
		const p = params(messages, { model: "sim-small" });
		const arrivals: number[] = [];
		const lines: LlmStreamLine[] = [];
		await readLineBatches(await callLlmStream(caller, p, onMain), batch => {
			for (const line of batch) {
				lines.push(line);
				if (line.type === "delta") arrivals.push(Date.now());
			}
		});

		expect(lines[0]).toEqual({ type: "start", generationId: p.generationId, model: "sim-small", provider: "sim", nodeID: "llm-main" });
		expect(lines.slice(1, -1).every(l => l.type === "delta")).toBe(true);
		const [logged] = chats(sim);
		expect(lines.at(-1)).toEqual({
			type: "end",
			finishReason: "stop",
			usage: { promptTokens: logged?.promptTokens, completionTokens: 12 },
			usageSource: "provider"
		});
		expect(deltasOf(lines)).toHaveLength(12);
		// Flushed one by one, not batched at the end: the deltas arrive over the answer's duration.
		expect((arrivals.at(-1) as number) - (arrivals[0] as number)).toBeGreaterThan(150);
		expect(logged).toMatchObject({ model: "sim-small", stream: true, finished: true, aborted: false });

		sim.configure({ tokenIntervalMs: 0 });
		expect(deltasOf(lines).join("")).toBe((await directAnswer(messages))?.content);
	});

	it("reassembles the tool calls of a prompt naming two offered tools into one tool_calls line", async () => {
		const tools: ToolDefinition[] = [
			{
				type: "function",
				function: { name: "get_weather", parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } }
			},
			{ type: "function", function: { name: "get_time", parameters: { type: "object", properties: { zone: { type: "string" } } } } }
		];
		const messages = user('Use get_weather {"city":"Paris"} and then get_time for Paris');
		const lines = await collect(await callLlmStream(caller, params(messages, { model: "sim-medium", tools }), onMain));

		expect(lines.map(l => l.type)).toEqual(["start", "tool_calls", "end"]);
		const toolLine = lines[1] as Extract<LlmStreamLine, { type: "tool_calls" }>;
		const expected = (await directAnswer(messages, "sim-medium", tools))?.tool_calls ?? [];
		expect(expected).toHaveLength(2);
		expect(toolLine.toolCalls.map(c => c.function)).toEqual(expected.map(c => (c.type === "function" ? c.function : null)));
		expect(JSON.parse(toolLine.toolCalls[0]?.function.arguments ?? "")).toEqual({ city: "Paris" });
		expect(toolLine.toolCalls.every(c => c.type === "function" && c.id.length > 0)).toBe(true);
		expect(lines[2]).toMatchObject({ type: "end", finishReason: "tool_calls", usageSource: "provider" });
	});

	it("refuses a second generation with the id of a running one", async () => {
		expect.assertions(2);
		sim.configure({ tokenIntervalMs: 20, outputTokens: 50 });
		const p = params(user("only once"), { model: "sim-small" });
		const stream = await callLlmStream(caller, p, onMain);
		await expect(caller.call("llm.stream", p, onMain)).rejects.toMatchObject({ type: "CONFLICT", code: 409 });
		expect((await collect(stream)).at(-1)).toMatchObject({ type: "end", finishReason: "stop" });
	});

	it("rejects a request that breaks the parameter rules", async () => {
		const bad = { generationId: crypto.randomUUID(), messages: [{ role: "robot", content: "hi" }] };
		await expect(caller.call("llm.stream", bad, onMain)).rejects.toMatchObject({ type: "VALIDATION_ERROR" });
		await expect(caller.call("llm.stream", { ...bad, generationId: "nope", messages: user("hi") }, onMain)).rejects.toMatchObject({
			type: "VALIDATION_ERROR"
		});
	});
});

describe("llm.chat", () => {
	it("answers with the whole text, the model, the provider and the provider's usage", async () => {
		const messages = user("What is a broker?");
		const answer = await caller.call<ChatResult, unknown>("llm.chat", { messages, model: "sim-large" }, onMain);
		expect(answer).toMatchObject({
			content: (await directAnswer(messages, "sim-large"))?.content,
			toolCalls: [],
			finishReason: "stop",
			model: "sim-large",
			provider: "sim",
			usageSource: "provider",
			usage: { completionTokens: 24 }
		});
	});
});

describe("cancel", () => {
	it("stops a stream from the caller's broadcast: upstream aborted, end cancelled with the usage so far", async () => {
		sim.configure({ tokenIntervalMs: 20, outputTokens: 300 });
		const messages = user("Write me a very long story");
		const p = params(messages, { model: "sim-small" });
		const lines: LlmStreamLine[] = [];
		let cancelled: Promise<void> | undefined;
		await readLineBatches(await callLlmStream(caller, p, onMain), batch => {
			lines.push(...batch);
			if (deltasOf(lines).length >= 3) cancelled ??= caller.broadcast("generation.cancel", { generationId: p.generationId });
		});
		await cancelled;

		const end = lines.at(-1);
		const text = deltasOf(lines).join("");
		expect(end).toEqual({
			type: "end",
			finishReason: "cancelled",
			usage: { promptTokens: countPromptTokens(messages), completionTokens: countTokens(text) },
			usageSource: "tokenizer"
		});
		expect(deltasOf(lines).length).toBeGreaterThanOrEqual(3);
		expect(deltasOf(lines).length).toBeLessThan(100);
		await upstreamAborted(sim);
		expect(chats(sim)[0]).toMatchObject({ aborted: true, finished: false });
	});

	it("llm.cancel stops a chat, which returns the partial answer as cancelled", async () => {
		sim.configure({ tokenIntervalMs: 20, outputTokens: 300 });
		const generationId = crypto.randomUUID();
		const answer = caller.call<ChatResult, unknown>("llm.chat", { generationId, messages: user("Long one please"), model: "sim-small" }, onMain);
		await waitUntil(async () => (chats(sim)[0]?.completionTokens ?? 0) >= 3, 3000, 10);
		await caller.call("llm.cancel", { generationId });
		const result = await answer;
		expect(result.finishReason).toBe("cancelled");
		expect(result.content.length).toBeGreaterThan(0);
		expect(result.usage.completionTokens).toBe(countTokens(result.content));
		await upstreamAborted(sim);
	});

	it("a cancel that arrives before the generation still stops it: start and end, no tokens", async () => {
		const p = params(user("hello there"), { model: "sim-small" });
		await caller.broadcast("generation.cancel", { generationId: p.generationId });
		// The broadcast has no answer to wait on: give it time to reach the llm node first.
		await new Promise(r => setTimeout(r, 100));
		const lines = await collect(await callLlmStream(caller, p, onMain));
		expect(lines.map(l => l.type)).toEqual(["start", "end"]);
		expect(lines[1]).toMatchObject({ finishReason: "cancelled", usage: { completionTokens: 0 } });
		expect(chats(sim)).toHaveLength(0);
	});
});

describe("a consumer that goes away", () => {
	it("aborts upstream when a remote consumer destroys the stream (callLlmStream broadcasts the cancel)", async () => {
		sim.configure({ tokenIntervalMs: 20, outputTokens: 300 });
		const stream = await callLlmStream(caller, params(user("go on and on"), { model: "sim-small" }), onMain);
		let deltas = 0;
		// A throwing consumer destroys the stream.
		const reading = readLineBatches(stream, batch => {
			deltas += deltasOf(batch).length;
			if (deltas >= 2) throw new Error("enough");
		});
		await expect(reading).rejects.toThrow("enough");
		expect(stream.destroyed).toBe(true);
		await upstreamAborted(sim);
	});

	it("aborts upstream when a consumer on the producing node destroys the stream", async () => {
		sim.configure({ tokenIntervalMs: 20, outputTokens: 300 });
		const node = nodes[0] as ChatmeshNode;
		const stream = await node.broker.call<Readable, StreamParams>("llm.stream", params(user("local reader"), { model: "sim-small" }));
		await new Promise(resolve => stream.once("data", resolve));
		stream.destroy();
		await upstreamAborted(sim);
	});

	it("aborts upstream when the calling node leaves the cluster", async () => {
		sim.configure({ tokenIntervalMs: 20, outputTokens: 300 });
		const other = new ServiceBroker({ ...brokerOptions(loadConfig({ ...baseEnv, SERVICES: undefined })), nodeID: "caller-2" });
		await other.start();
		await waitUntil(async () => Boolean(other.registry.getActionEndpointByNodeId("llm.stream", "llm-main")), 10_000, 20);
		const stream = await other.call<Readable, StreamParams>("llm.stream", params(user("until I leave"), { model: "sim-small" }), {
			...onMain,
			timeout: 0
		});
		await new Promise(resolve => stream.once("data", resolve));
		await other.stop();
		await upstreamAborted(sim);
	});
});

describe("models and routing", () => {
	it("refuses an unknown model with MODEL_NOT_FOUND before calling any provider", async () => {
		expect.assertions(3);
		await expect(caller.call("llm.stream", params(user("hi"), { model: "gpt-17" }), onMain)).rejects.toSatisfy(
			err => err instanceof BadRequestError && (err as BadRequestError).type === "MODEL_NOT_FOUND" && (err as BadRequestError).code === 400
		);
		await expect(caller.call("llm.chat", { messages: user("hi"), model: "gpt-17" }, onMain)).rejects.toMatchObject({ type: "MODEL_NOT_FOUND" });
		expect(sim.requests()).toHaveLength(0);
	});

	const hardPrompt =
		"Analyze this code step by step, compare it with a lock-free design and prove it cannot deadlock:\n" +
		"```ts\nclass Pool {\n  private free: Conn[] = [];\n  async take(): Promise<Conn> {\n    while (this.free.length === 0) await this.wait();\n    return this.free.pop()!;\n  }\n}\n```";

	it("routes 'hi' to the cheap tier and a long code and reasoning prompt to the strong one", async () => {
		await expect(caller.call("llm.route", { messages: user("hi") }, onMain)).resolves.toMatchObject({ model: "sim-small", tier: "cheap" });
		const strong = await caller.call<{ model: string; tier: string; reason: string }, unknown>("llm.route", { messages: user(hardPrompt) }, onMain);
		expect(strong).toMatchObject({ model: "sim-large", tier: "strong" });
		expect(strong.reason).toMatch(/code block/);
	});

	it("streams with the routed model when the request names none", async () => {
		const lines = await collect(await callLlmStream(caller, params(user(hardPrompt)), onMain));
		expect(lines[0]).toMatchObject({ type: "start", model: "sim-large" });
		const quick = await collect(await callLlmStream(caller, params(user("hi")), onMain));
		expect(quick[0]).toMatchObject({ type: "start", model: "sim-small" });
		expect(chats(sim).map(r => r.model)).toEqual(["sim-large", "sim-small"]);
	});
});

describe("provider failures", () => {
	let first: SimulatorHandle;
	let second: SimulatorHandle;
	const onChain = { nodeID: "llm-chain" };

	beforeAll(async () => {
		first = await newSimulator();
		second = await newSimulator();
		await llmNode("llm-chain", { LLM_PROVIDERS: providers(["first", first], ["second", second]) });
	});

	it("falls back to the next provider when the first answers 503 before its first token", async () => {
		first.configure({ errorStatus: 503, errorRate: 1 });
		const lines = await collect(await callLlmStream(caller, params(user("hello"), { model: "sim-small" }), onChain));
		expect(lines[0]).toMatchObject({ type: "start", provider: "second" });
		expect(lines.at(-1)).toMatchObject({ type: "end", finishReason: "stop" });
		expect(chats(first)).toMatchObject([{ status: 503 }]);
		expect(chats(second)).toHaveLength(1);
	});

	it("falls back to the next provider when the first refuses the connection", async () => {
		// A port that was just free: nothing listens there.
		const closed = await new Promise<number>(resolve => {
			const server = net.createServer().listen(0, "127.0.0.1", () => {
				const { port } = server.address() as net.AddressInfo;
				server.close(() => resolve(port));
			});
		});
		const dead = JSON.stringify([
			{ name: "dead", baseURL: `http://127.0.0.1:${closed}/v1`, models: MODELS },
			{ name: "second", baseURL: second.baseURL, models: MODELS }
		]);
		await llmNode("llm-dead-first", { LLM_PROVIDERS: dead });
		const lines = await collect(await callLlmStream(caller, params(user("hello"), { model: "sim-small" }), { nodeID: "llm-dead-first" }));
		expect(lines[0]).toMatchObject({ type: "start", provider: "second" });
		expect(lines.at(-1)).toMatchObject({ type: "end", finishReason: "stop" });
		expect(chats(second)).toHaveLength(1);
	});

	it("throws UPSTREAM_ERROR when every provider fails", async () => {
		expect.assertions(4);
		first.configure({ errorStatus: 503, errorRate: 1 });
		second.configure({ errorStatus: 500, errorRate: 1 });
		const err = await caller.call("llm.stream", params(user("hello"), { model: "sim-small" }), onChain).catch((e: unknown) => e);
		expect(err).toBeInstanceOf(UpstreamError);
		expect(err).toMatchObject({ type: "UPSTREAM_ERROR", code: 502, retryable: false });
		expect((err as UpstreamError).data).toMatchObject({
			attempts: [
				{ provider: "first", status: 503 },
				{ provider: "second", status: 500 }
			]
		});
		await expect(caller.call("llm.chat", { messages: user("hello"), model: "sim-small" }, onChain)).rejects.toMatchObject({
			type: "UPSTREAM_ERROR"
		});
	});

	it("throws UPSTREAM_RATE_LIMITED for 429", async () => {
		expect.assertions(2);
		sim.configure({ errorStatus: 429, errorRate: 1 });
		await expect(caller.call("llm.stream", params(user("hello"), { model: "sim-small" }), onMain)).rejects.toMatchObject({
			name: "UpstreamError",
			type: "UPSTREAM_RATE_LIMITED"
		});
		await expect(caller.call("llm.chat", { messages: user("hello"), model: "sim-small" }, onMain)).rejects.toMatchObject({
			type: "UPSTREAM_RATE_LIMITED",
			code: 429
		});
	});

	it("throws UPSTREAM_BAD_REQUEST for a refused request, without trying the next provider", async () => {
		expect.assertions(3);
		first.configure({ errorStatus: 400, errorRate: 1 });
		await expect(caller.call("llm.chat", { messages: user("hello"), model: "sim-small" }, onChain)).rejects.toMatchObject({
			type: "UPSTREAM_BAD_REQUEST"
		});
		expect(chats(first)).toHaveLength(1);
		expect(chats(second)).toHaveLength(0);
	});
});

describe("timeouts", () => {
	const onTimed = { nodeID: "llm-timed" };

	beforeAll(async () => {
		await llmNode("llm-timed", { LLM_PROVIDERS: providers(["sim", sim]), LLM_FIRST_TOKEN_TIMEOUT_MS: "300", LLM_IDLE_TIMEOUT_MS: "300" });
	});

	it("takes its timeouts from this node's configuration only", () => {
		const settingsOf = (node: ChatmeshNode) => (node.broker.getLocalService("llm") as unknown as { settings: LlmSettings }).settings;
		expect(settingsOf(nodes[0] as ChatmeshNode)).toMatchObject({ firstTokenTimeoutMs: 60_000, idleTimeoutMs: 30_000 });
		expect(settingsOf(nodes.at(-1) as ChatmeshNode)).toMatchObject({ firstTokenTimeoutMs: 300, idleTimeoutMs: 300 });
	});

	it("gives stream and chat their bulkhead and call timeout, as the calling node sees them", () => {
		type Seen = { bulkhead?: unknown; timeout?: number };
		const seen = (action: string, nodeID: string) => caller.registry.getActionEndpointByNodeId(action, nodeID)?.action as Seen;
		const bulkhead = { enabled: true, concurrency: 64, maxQueueSize: 1000 };
		// One provider: its first-token timeout plus REQUEST_TIMEOUT_MS (30 s) for queueing.
		expect(seen("llm.stream", "llm-main")).toMatchObject({ bulkhead, timeout: 90_000 });
		expect(seen("llm.stream", "llm-timed")).toMatchObject({ bulkhead, timeout: 30_300 });
		expect(seen("llm.chat", "llm-main")).toMatchObject({ bulkhead, timeout: 0 });
		expect(seen("llm.route", "llm-main").bulkhead).toBeUndefined();
	});

	it("throws UPSTREAM_TIMEOUT when no first token comes in time, and aborts the upstream request", async () => {
		expect.assertions(2);
		sim.configure({ ttftMs: 2000 });
		const started = Date.now();
		await expect(caller.call("llm.stream", params(user("slow"), { model: "sim-small" }), onTimed)).rejects.toMatchObject({
			name: "UpstreamError",
			type: "UPSTREAM_TIMEOUT"
		});
		expect(Date.now() - started).toBeLessThan(1500);
		await upstreamAborted(sim);
	});

	it("ends a stream that goes silent with an UPSTREAM_TIMEOUT error line and the usage so far", async () => {
		sim.configure({ hangAfterTokens: 3 });
		const lines = await collect(await callLlmStream(caller, params(user("then hang"), { model: "sim-small" }), onTimed));
		expect(deltasOf(lines)).toHaveLength(3);
		expect(lines.at(-1)).toMatchObject({ type: "error", code: "UPSTREAM_TIMEOUT", usage: { completionTokens: countTokens(deltasOf(lines).join("")) } });
		await upstreamAborted(sim);
	});
});

describe("circuit breaker", () => {
	it("skips a provider after N failures, probes it after the open time, and closes when it answers", async () => {
		const bad = await newSimulator();
		const good = await newSimulator();
		await llmNodeWith("llm-breaker", { LLM_PROVIDERS: providers(["bad", bad], ["good", good]) }, { breaker: { failureThreshold: 2, openMs: 600 } });
		const ask = () => caller.call<ChatResult, unknown>("llm.chat", { messages: user("hi"), model: "sim-small" }, { nodeID: "llm-breaker" });
		bad.configure({ errorStatus: 503 });

		for (let i = 0; i < 2; i++) expect((await ask()).provider).toBe("good");
		expect(chats(bad)).toHaveLength(2); // opened now
		for (let i = 0; i < 3; i++) expect((await ask()).provider).toBe("good");
		expect(chats(bad)).toHaveLength(2); // skipped while open

		// Time passing is the point: the breaker's open window (600 ms) ends.
		await new Promise(r => setTimeout(r, 700));
		expect((await ask()).provider).toBe("good");
		expect(chats(bad)).toHaveLength(3); // the half-open probe failed: open again
		expect((await ask()).provider).toBe("good");
		expect(chats(bad)).toHaveLength(3);

		bad.resetConfig();
		// Time passing is the point: the open window ends again.
		await new Promise(r => setTimeout(r, 700));
		expect((await ask()).provider).toBe("bad"); // the probe succeeded: closed
		expect((await ask()).provider).toBe("bad");
		expect(chats(bad)).toHaveLength(5);
	});
});

describe("concurrency", () => {
	it("holds a generation's slot until its stream ends, not only until the first token", async () => {
		await llmNodeWith("llm-gpu", { LLM_PROVIDERS: providers(["sim", sim]), LLM_CONCURRENCY: "1" }, {});
		sim.configure({ tokenIntervalMs: 20, outputTokens: 20 });
		const onGpu = { nodeID: "llm-gpu" };
		const first = await callLlmStream(caller, params(user("one"), { model: "sim-small" }), onGpu);
		const second = callLlmStream(caller, params(user("two"), { model: "sim-small" }), onGpu);
		// Time passing is the point: the second call must not start during it.
		await new Promise(r => setTimeout(r, 200));
		expect(chats(sim)).toHaveLength(1); // the second waits for the first to end
		const [a, b] = await Promise.all([collect(first), second.then(collect)]);
		expect(a.at(-1)).toMatchObject({ type: "end", finishReason: "stop" });
		expect(b.at(-1)).toMatchObject({ type: "end", finishReason: "stop" });
		const [x, y] = chats(sim);
		expect((y?.at ?? 0) >= (x?.at ?? 0) + (x?.durationMs ?? 0) - 5).toBe(true);
	});
});

describe("stopping an llm node", () => {
	it("lets a running stream finish within the shutdown grace", async () => {
		const node = await llmNode("llm-drain", { LLM_PROVIDERS: providers(["sim", sim]), SHUTDOWN_GRACE_MS: "5000" });
		sim.configure({ tokenIntervalMs: 20, outputTokens: 25 });
		const stream = await callLlmStream(caller, params(user("finish me"), { model: "sim-small" }), { nodeID: "llm-drain" });
		const stopping = node.stop();
		const lines = await collect(stream);
		await stopping;
		expect(deltasOf(lines)).toHaveLength(25);
		expect(lines.at(-1)).toMatchObject({ type: "end", finishReason: "stop" });
	});

	it("ends what is still running after the grace with SERVICE_UNAVAILABLE and aborts it upstream", async () => {
		const node = await llmNode("llm-short", { LLM_PROVIDERS: providers(["sim", sim]), SHUTDOWN_GRACE_MS: "300" });
		sim.configure({ tokenIntervalMs: 20, outputTokens: 1000 });
		const stream = await callLlmStream(caller, params(user("never ends"), { model: "sim-small" }), { nodeID: "llm-short" });
		const started = Date.now();
		const stopping = node.stop();
		const lines = await collect(stream);
		await stopping;
		expect(Date.now() - started).toBeLessThan(5000);
		expect(lines.at(-1)).toMatchObject({ type: "error", code: "SERVICE_UNAVAILABLE" });
		expect(deltasOf(lines).length).toBeGreaterThan(0);
		await upstreamAborted(sim);
	});
});

describe("a producer process that dies mid-stream", () => {
	it("breaks the consumer's stream with an error once the heartbeat drops the node", async () => {
		sim.configure({ tokenIntervalMs: 50, outputTokens: 2000 });
		const proc = spawnNode({ ...baseEnv, NODE_ID: "llm-proc", LLM_PROVIDERS: providers(["sim", sim]) });
		try {
			await reachable("llm-proc", 30_000);
			const stream = await callLlmStream(caller, params(user("die while talking"), { model: "sim-small" }), { nodeID: "llm-proc" });
			const lines: LlmStreamLine[] = [];
			let killedAt = 0;
			const ended = readLineBatches(stream, batch => {
				lines.push(...batch);
				if (deltasOf(lines).length >= 3 && !killedAt) {
					killedAt = Date.now();
					proc.kill("SIGKILL");
				}
			});
			const err = await ended.then(
				() => null,
				(e: unknown) => e as Error
			);
			const after = Date.now() - killedAt;
			expect(err?.message).toBe("Stream closed by llm-proc");
			expect(lines.some(l => l.type === "end" || l.type === "error")).toBe(false);
			expect(after).toBeLessThan(15_000);
			console.info(`consumer saw the dead producer after ${after} ms: ${err?.message}`);
		} finally {
			proc.kill("SIGKILL");
			await proc.exited;
		}
	}, 45_000);
});
