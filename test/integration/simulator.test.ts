/**
 * The inference simulator, driven over HTTP with the official openai SDK exactly as chatmesh's
 * LLM service drives a real provider.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import OpenAI from "openai";
import type { ChatCompletionChunk, ChatCompletionCreateParamsNonStreaming, ChatCompletionTool } from "openai/resources/chat/completions";
import { encode } from "gpt-tokenizer";
import { startSimulator, type SimulatorHandle, type SimulatorRequestLogEntry } from "../../simulator/simulator";

let sim: SimulatorHandle;
let client: OpenAI;

beforeAll(async () => {
	sim = await startSimulator({ port: 0 });
	client = new OpenAI({ baseURL: sim.baseURL, apiKey: "test", maxRetries: 0 });
});

afterAll(async () => {
	await sim?.close();
});

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

let idCounter = 0;
/** A unique x-request-id, to find a request's entry in the log. */
function requestId(label: string): string {
	return `${label}-${process.pid}-${++idCounter}`;
}

async function logOverHttp(): Promise<SimulatorRequestLogEntry[]> {
	const response = await fetch(`${sim.url}/_simulator/requests`);
	expect(response.status).toBe(200);
	return (await response.json()) as SimulatorRequestLogEntry[];
}

async function entryFor(rid: string): Promise<SimulatorRequestLogEntry | undefined> {
	return (await logOverHttp()).find(e => e.headers["x-request-id"] === rid);
}

/** Polls the HTTP log until `predicate` holds for the entry (or the timeout passes). */
async function waitForEntry(rid: string, predicate: (e: SimulatorRequestLogEntry) => boolean, timeoutMs = 2000): Promise<SimulatorRequestLogEntry | undefined> {
	const deadline = Date.now() + timeoutMs;
	let entry = await entryFor(rid);
	while (!(entry && predicate(entry)) && Date.now() < deadline) {
		await sleep(20);
		entry = await entryFor(rid);
	}
	return entry;
}

function sleep(ms: number): Promise<void> {
	return new Promise(resolve => setTimeout(resolve, ms));
}

function request(content: string, extra: Partial<ChatCompletionCreateParamsNonStreaming> = {}): ChatCompletionCreateParamsNonStreaming {
	return { model: "sim-small", messages: [{ role: "user", content }], ...extra };
}

async function collect(stream: AsyncIterable<ChatCompletionChunk>): Promise<ChatCompletionChunk[]> {
	const chunks: ChatCompletionChunk[] = [];
	for await (const chunk of stream) chunks.push(chunk);
	return chunks;
}

function contentChunks(chunks: ChatCompletionChunk[]): ChatCompletionChunk[] {
	return chunks.filter(c => typeof c.choices[0]?.delta.content === "string" && c.choices[0].delta.content !== "");
}

function streamedText(chunks: ChatCompletionChunk[]): string {
	return chunks.map(c => c.choices[0]?.delta.content ?? "").join("");
}

const TOOLS: ChatCompletionTool[] = [
	{
		type: "function",
		function: {
			name: "calculator",
			description: "Evaluates an arithmetic expression",
			parameters: { type: "object", properties: { expression: { type: "string" } }, required: ["expression"] }
		}
	},
	{
		type: "function",
		function: {
			name: "get_weather",
			description: "Weather forecast for a city",
			parameters: {
				type: "object",
				properties: { city: { type: "string" }, days: { type: "integer" }, metric: { type: "boolean" }, note: { type: "string" } },
				required: ["city", "days", "metric"]
			}
		}
	}
];

const TOOL_PROMPT = 'Check get_weather for Paris, then use calculator {"expression":"2+3"} please';

// ---------------------------------------------------------------------------------------------
// Chat completions
// ---------------------------------------------------------------------------------------------

describe("chat completions", () => {
	it("answers non-stream with deterministic words and usage matching the streamed token count", async () => {
		const body = request("Tell me something about rivers");
		const first = await client.chat.completions.create(body);
		const second = await client.chat.completions.create(body);
		const other = await client.chat.completions.create(request("Tell me something about mountains"));

		expect(first.object).toBe("chat.completion");
		expect(first.id).toMatch(/^chatcmpl-/);
		expect(first.model).toBe("sim-small");
		const choice = first.choices[0];
		expect(choice?.message.role).toBe("assistant");
		expect(choice?.finish_reason).toBe("stop");
		expect(choice?.message.content).toMatch(/^[a-z]+( [a-z]+)*$/);
		expect(second.choices[0]?.message.content).toBe(choice?.message.content);
		expect(other.choices[0]?.message.content).not.toBe(choice?.message.content);

		// Default length, and completion_tokens = number of streamed content chunks.
		const chunks = await collect(await client.chat.completions.create({ ...body, stream: true }));
		expect(contentChunks(chunks)).toHaveLength(24);
		expect(first.usage?.completion_tokens).toBe(contentChunks(chunks).length);

		// prompt_tokens as OpenAI counts them: 3 per message + role + content, plus 3 to prime the reply.
		expect(first.usage?.prompt_tokens).toBe(3 + encode("user").length + encode("Tell me something about rivers").length + 3);
		expect(first.usage?.total_tokens).toBe((first.usage?.prompt_tokens ?? 0) + (first.usage?.completion_tokens ?? 0));
	});

	it("streams role first, one chunk per token, finish_reason last, then the usage chunk", async () => {
		const body = request("Describe a quiet garden");
		const plain = await client.chat.completions.create(body);
		const chunks = await collect(await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } }));

		expect(chunks[0]?.object).toBe("chat.completion.chunk");
		expect(chunks[0]?.choices[0]?.delta).toMatchObject({ role: "assistant", content: "" });

		const usageChunk = chunks[chunks.length - 1];
		expect(usageChunk?.choices).toEqual([]);
		const withChoices = chunks.filter(c => c.choices.length > 0);
		const finishChunk = withChoices[withChoices.length - 1];
		expect(finishChunk?.choices[0]?.finish_reason).toBe("stop");
		expect(finishChunk?.choices[0]?.delta).toEqual({});
		// No other chunk carries a finish_reason.
		expect(withChoices.slice(0, -1).every(c => c.choices[0]?.finish_reason === null)).toBe(true);

		// Tokens: words with a leading space, the first without.
		const tokens = contentChunks(chunks).map(c => c.choices[0]?.delta.content ?? "");
		expect(tokens[0]).toMatch(/^[a-z]+$/);
		expect(tokens.slice(1).every(t => /^ [a-z]+$/.test(t))).toBe(true);

		// Determinism: the streamed text is the non-stream text of the same request.
		expect(streamedText(chunks)).toBe(plain.choices[0]?.message.content);
		expect(usageChunk?.usage).toMatchObject({
			completion_tokens: tokens.length,
			prompt_tokens: plain.usage?.prompt_tokens,
			total_tokens: (plain.usage?.prompt_tokens ?? 0) + tokens.length
		});
	});

	it("sends no usage chunk without stream_options.include_usage", async () => {
		const chunks = await collect(await client.chat.completions.create({ ...request("No usage please"), stream: true }));
		expect(chunks.length).toBeGreaterThan(2);
		expect(chunks.every(c => c.choices.length === 1)).toBe(true);
		expect(chunks.some(c => c.usage)).toBe(false);
	});

	it("takes the output length from the x-simulator-output-tokens header (per request or default headers)", async () => {
		const perRequest = await client.chat.completions.create(request("short one"), { headers: { "x-simulator-output-tokens": "7" } });
		expect(perRequest.usage?.completion_tokens).toBe(7);
		expect(perRequest.choices[0]?.message.content?.split(" ")).toHaveLength(7);

		const headed = new OpenAI({ baseURL: sim.baseURL, apiKey: "test", maxRetries: 0, defaultHeaders: { "x-simulator-output-tokens": "3" } });
		const chunks = await collect(await headed.chat.completions.create({ ...request("short one"), stream: true }));
		expect(contentChunks(chunks)).toHaveLength(3);

		// The long answer starts with the short one: same seed, same words.
		const long = await client.chat.completions.create(request("short one"), { headers: { "x-simulator-output-tokens": "100" } });
		expect(long.usage?.completion_tokens).toBe(100);
		expect(long.choices[0]?.message.content?.startsWith(perRequest.choices[0]?.message.content ?? "?")).toBe(true);
	});

	it("cuts at max_tokens with finish_reason length, and stops naturally below it", async () => {
		const cut = await client.chat.completions.create(request("a long story", { max_tokens: 5 }));
		expect(cut.choices[0]?.finish_reason).toBe("length");
		expect(cut.usage?.completion_tokens).toBe(5);

		const chunks = await collect(await client.chat.completions.create({ ...request("a long story"), max_completion_tokens: 4, stream: true }));
		expect(contentChunks(chunks)).toHaveLength(4);
		expect(chunks[chunks.length - 1]?.choices[0]?.finish_reason).toBe("length");

		const roomy = await client.chat.completions.create(request("a long story", { max_tokens: 500 }));
		expect(roomy.choices[0]?.finish_reason).toBe("stop");
		expect(roomy.usage?.completion_tokens).toBe(24);
	});

	it("echoes the last user message with x-simulator-echo: 1", async () => {
		const text = "The answer is 42.\nSecond line, exactly.";
		const answer = await client.chat.completions.create(
			{
				model: "sim-medium",
				messages: [
					{ role: "system", content: "be brief" },
					{ role: "user", content: text }
				]
			},
			{ headers: { "x-simulator-echo": "1" } }
		);
		expect(answer.choices[0]?.message.content).toBe(text);
		expect(answer.usage?.completion_tokens).toBe(text.split(/\s+/).length);

		const chunks = await collect(
			await client.chat.completions.create(
				{ model: "sim-medium", messages: [{ role: "user", content: text }], stream: true },
				{ headers: { "x-simulator-echo": "1" } }
			)
		);
		expect(streamedText(chunks)).toBe(text);
	});

	it("produces a long zero-interval stream in full", async () => {
		const chunks = await collect(
			await client.chat.completions.create({ ...request("go long"), stream: true }, { headers: { "x-simulator-output-tokens": "3000" } })
		);
		expect(contentChunks(chunks)).toHaveLength(3000);
		expect(chunks[chunks.length - 1]?.choices[0]?.finish_reason).toBe("stop");
	});
});

// ---------------------------------------------------------------------------------------------
// Tool calls
// ---------------------------------------------------------------------------------------------

describe("tool calls", () => {
	const weatherArgs = { city: TOOL_PROMPT, days: 0, metric: false };

	it("calls the named tools in prompt order (non-stream)", async () => {
		const rid = requestId("tools");
		const answer = await client.chat.completions.create(request(TOOL_PROMPT, { tools: TOOLS }), { headers: { "x-request-id": rid } });
		const choice = answer.choices[0];
		expect(choice?.finish_reason).toBe("tool_calls");
		expect(choice?.message.content).toBeNull();
		const calls = choice?.message.tool_calls ?? [];
		expect(calls).toHaveLength(2);
		const [weather, calculator] = calls;
		expect(weather?.type).toBe("function");
		expect(weather?.id).toMatch(/^call_[0-9a-f]+$/);
		expect(calculator?.id).toMatch(/^call_[0-9a-f]+$/);
		expect(weather?.id).not.toBe(calculator?.id);
		if (weather?.type !== "function" || calculator?.type !== "function") throw new Error("expected function tool calls");
		expect(weather.function.name).toBe("get_weather");
		expect(JSON.parse(weather.function.arguments)).toEqual(weatherArgs);
		expect(calculator.function.name).toBe("calculator");
		expect(JSON.parse(calculator.function.arguments)).toEqual({ expression: "2+3" });

		const entry = await entryFor(rid);
		expect(entry?.tools).toEqual(["calculator", "get_weather"]);
		expect(entry?.finishReason).toBe("tool_calls");
	});

	it("streams tool call deltas the SDK reassembles", async () => {
		const stream = client.chat.completions.stream({ ...request(TOOL_PROMPT, { tools: TOOLS }), stream: true });
		const raw: ChatCompletionChunk[] = [];
		stream.on("chunk", chunk => raw.push(chunk));
		const final = await stream.finalChatCompletion();

		const choice = final.choices[0];
		expect(choice?.finish_reason).toBe("tool_calls");
		const calls = choice?.message.tool_calls ?? [];
		expect(calls.map(c => (c.type === "function" ? c.function.name : c.type))).toEqual(["get_weather", "calculator"]);
		const [weather, calculator] = calls;
		if (weather?.type !== "function" || calculator?.type !== "function") throw new Error("expected function tool calls");
		expect(JSON.parse(weather.function.arguments)).toEqual(weatherArgs);
		expect(JSON.parse(calculator.function.arguments)).toEqual({ expression: "2+3" });

		// Wire shape: per call a first delta with id, type and name, then argument fragments.
		const deltas = raw.flatMap(c => c.choices[0]?.delta.tool_calls ?? []);
		const firstOfCall1 = deltas.find(d => d.index === 1);
		expect(firstOfCall1).toMatchObject({ index: 1, id: calculator.id, type: "function", function: { name: "calculator", arguments: "" } });
		const fragments = deltas.filter(d => d.index === 1 && d.id === undefined);
		expect(fragments.length).toBeGreaterThan(1);
		expect(fragments.map(d => d.function?.arguments ?? "").join("")).toBe(calculator.function.arguments);
	});

	it("answers text when no offered tool is named or tool_choice is none", async () => {
		const unnamed = await client.chat.completions.create(request("what is the weather like?", { tools: TOOLS }));
		expect(unnamed.choices[0]?.finish_reason).toBe("stop");
		expect(unnamed.choices[0]?.message.tool_calls ?? []).toHaveLength(0);

		const none = await client.chat.completions.create(request(TOOL_PROMPT, { tools: TOOLS, tool_choice: "none" }));
		expect(none.choices[0]?.finish_reason).toBe("stop");

		// A tool named but not offered is just a word.
		const notOffered = await client.chat.completions.create(request("use the calculator please"));
		expect(notOffered.choices[0]?.message.tool_calls ?? []).toHaveLength(0);
	});

	it("answers after tool results with the results in the text", async () => {
		const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [
			{ role: "user", content: TOOL_PROMPT },
			{
				role: "assistant",
				content: null,
				tool_calls: [
					{ id: "call_a", type: "function", function: { name: "get_weather", arguments: "{}" } },
					{ id: "call_b", type: "function", function: { name: "calculator", arguments: '{"expression":"2+3"}' } }
				]
			},
			{ role: "tool", tool_call_id: "call_a", content: "sunny, 21C" },
			{ role: "tool", tool_call_id: "call_b", content: "5" }
		];
		const answer = await client.chat.completions.create({ model: "sim-small", messages, tools: TOOLS });
		const content = answer.choices[0]?.message.content ?? "";
		expect(answer.choices[0]?.finish_reason).toBe("stop");
		expect(content.startsWith("Based on the tool results: sunny, 21C; 5 ")).toBe(true);
		expect(content.length).toBeGreaterThan("Based on the tool results: sunny, 21C; 5 ".length);

		const chunks = await collect(await client.chat.completions.create({ model: "sim-small", messages, tools: TOOLS, stream: true }));
		expect(streamedText(chunks)).toBe(content);
	});
});

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

describe("errors", () => {
	it("injects an error status from x-simulator-error-status as an SDK APIError", async () => {
		const failing = client.chat.completions.create(request("fail me"), { headers: { "x-simulator-error-status": "503" } });
		await expect(failing).rejects.toBeInstanceOf(OpenAI.APIError);
		await expect(failing).rejects.toMatchObject({ status: 503, type: "server_error" });

		// Answered before any stream starts: the streamed request fails the same way.
		const streamed = client.chat.completions.create({ ...request("fail me"), stream: true }, { headers: { "x-simulator-error-status": "503" } });
		await expect(streamed).rejects.toMatchObject({ status: 503 });

		// Rate 0 with a status never fails.
		const ok = await client.chat.completions.create(request("fine"), { headers: { "x-simulator-error-status": "503", "x-simulator-error-rate": "0" } });
		expect(ok.choices[0]?.finish_reason).toBe("stop");
	});

	it("injects process-level errors at a reproducible rate", async () => {
		try {
			sim.configure({ errorStatus: 429, errorRate: 1 });
			await expect(client.chat.completions.create(request("x"))).rejects.toMatchObject({ status: 429 });

			sim.configure({ errorRate: 0.5 });
			const outcomes: number[] = [];
			for (let i = 0; i < 4; i++) {
				outcomes.push(
					await client.chat.completions.create(request("x")).then(
						() => 200,
						(e: InstanceType<typeof OpenAI.APIError>) => e.status ?? 0
					)
				);
			}
			expect(outcomes).toEqual([200, 429, 200, 429]);
		} finally {
			sim.resetConfig();
		}
		expect(sim.options.errorStatus).toBeNull();
	});

	it("answers 404 model_not_found for an unknown model", async () => {
		const failing = client.chat.completions.create({ ...request("hi"), model: "gpt-nonexistent" });
		await expect(failing).rejects.toBeInstanceOf(OpenAI.NotFoundError);
		await expect(failing).rejects.toMatchObject({ status: 404, code: "model_not_found", param: "model", type: "invalid_request_error" });
	});

	it("answers 400 for malformed JSON, missing messages and invalid knob headers", async () => {
		const post = (body: string, headers: Record<string, string> = {}) =>
			fetch(`${sim.baseURL}/chat/completions`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body });

		const malformed = await post("{not json");
		expect(malformed.status).toBe(400);
		expect(await malformed.json()).toMatchObject({ error: { type: "invalid_request_error", message: expect.any(String) } });

		const noMessages = await post(JSON.stringify({ model: "sim-small" }));
		expect(noMessages.status).toBe(400);
		expect(await noMessages.json()).toMatchObject({ error: { type: "invalid_request_error", param: "messages" } });

		const badHeader = await post(JSON.stringify(request("hi")), { "x-simulator-ttft-ms": "soon" });
		expect(badHeader.status).toBe(400);
		expect(await badHeader.json()).toMatchObject({ error: { param: "x-simulator-ttft-ms", message: expect.stringContaining("x-simulator-ttft-ms") } });

		const typo = await post(JSON.stringify(request("hi")), { "x-simulator-ouput-tokens": "3" });
		expect(typo.status).toBe(400);
		expect(await typo.json()).toMatchObject({ error: { param: "x-simulator-ouput-tokens" } });

		const unknownRoute = await fetch(`${sim.baseURL}/nothing/here`);
		expect(unknownRoute.status).toBe(404);
		expect(await unknownRoute.json()).toMatchObject({ error: { type: "invalid_request_error" } });
	});

	it("enforces the API key when one is configured", async () => {
		const secured = await startSimulator({ apiKey: "sekret" });
		try {
			const wrong = new OpenAI({ baseURL: secured.baseURL, apiKey: "test", maxRetries: 0 });
			await expect(wrong.chat.completions.create(request("hi"))).rejects.toMatchObject({ status: 401, code: "invalid_api_key" });
			await expect(wrong.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);

			const right = new OpenAI({ baseURL: secured.baseURL, apiKey: "sekret", maxRetries: 0 });
			const answer = await right.chat.completions.create(request("hi"));
			expect(answer.choices[0]?.finish_reason).toBe("stop");

			const entries = secured.requests();
			expect(entries.map(e => e.status)).toEqual([401, 401, 200]);
			expect(entries.every(e => !("authorization" in e.headers))).toBe(true);
			expect(JSON.stringify(entries)).not.toContain("sekret");
		} finally {
			await secured.close();
		}
	});
});

// ---------------------------------------------------------------------------------------------
// Timing, aborts and hangs
// ---------------------------------------------------------------------------------------------

describe("timing, aborts and hangs", () => {
	it("records a client abort and stops producing", async () => {
		const rid = requestId("abort");
		const controller = new AbortController();
		const stream = await client.chat.completions.create(
			{ ...request("a very long answer"), stream: true },
			{ signal: controller.signal, headers: { "x-request-id": rid, "x-simulator-token-interval-ms": "20", "x-simulator-output-tokens": "200" } }
		);
		let received = 0;
		// The SDK ends the iteration (or throws an abort error) once the signal fires.
		await (async () => {
			for await (const chunk of stream) {
				if (chunk.choices[0]?.delta.content) received++;
				if (received === 3) controller.abort();
			}
		})().catch(() => undefined);
		expect(received).toBe(3);

		const entry = await waitForEntry(rid, e => e.aborted);
		expect(entry).toMatchObject({ aborted: true, finished: false, stream: true, status: 200, finishReason: null });
		const produced = entry?.completionTokens ?? Number.NaN;
		expect(produced).toBeGreaterThanOrEqual(3);
		expect(produced).toBeLessThan(20);

		// Production stopped: no more tokens counted after the abort (time passing is the point).
		await sleep(200);
		expect((await entryFor(rid))?.completionTokens).toBe(produced);
	});

	it("hangs after the role chunk with x-simulator-hang until the client aborts", async () => {
		const rid = requestId("hang");
		const controller = new AbortController();
		const stream = await client.chat.completions.create(
			{ ...request("hang please"), stream: true },
			{ signal: controller.signal, headers: { "x-request-id": rid, "x-simulator-hang": "1" } }
		);
		const chunks: ChatCompletionChunk[] = [];
		const consumed = (async () => {
			for await (const chunk of stream) chunks.push(chunk);
		})().catch(() => undefined);

		// Time passing is the point: a hung stream sends nothing more.
		await sleep(300);
		expect(chunks).toHaveLength(1);
		expect(chunks[0]?.choices[0]?.delta.role).toBe("assistant");
		expect((await entryFor(rid))?.aborted).toBe(false);

		controller.abort();
		await consumed;
		const entry = await waitForEntry(rid, e => e.aborted);
		expect(entry).toMatchObject({ aborted: true, finished: false, completionTokens: 0 });
	});

	it("hangs a non-stream request until the client times out", async () => {
		const rid = requestId("hang-nonstream");
		const started = Date.now();
		await expect(
			client.chat.completions.create(request("hang please"), { timeout: 300, headers: { "x-request-id": rid, "x-simulator-hang": "1" } })
		).rejects.toBeInstanceOf(OpenAI.APIConnectionTimeoutError);
		expect(Date.now() - started).toBeGreaterThanOrEqual(250);
		const entry = await waitForEntry(rid, e => e.aborted);
		expect(entry).toMatchObject({ aborted: true, status: null, finished: false });
	});

	it("produces N tokens then hangs with x-simulator-hang-after-tokens", async () => {
		const rid = requestId("hang-after");
		const controller = new AbortController();
		const stream = await client.chat.completions.create(
			{ ...request("stall midway"), stream: true },
			{ signal: controller.signal, headers: { "x-request-id": rid, "x-simulator-hang-after-tokens": "5", "x-simulator-output-tokens": "50" } }
		);
		const chunks: ChatCompletionChunk[] = [];
		const consumed = (async () => {
			for await (const chunk of stream) chunks.push(chunk);
		})().catch(() => undefined);

		// Time passing is the point: after its N tokens the stream sends nothing more.
		await sleep(300);
		expect(contentChunks(chunks)).toHaveLength(5);
		expect(chunks.some(c => c.choices[0]?.finish_reason)).toBe(false);
		controller.abort();
		await consumed;
		const entry = await waitForEntry(rid, e => e.aborted);
		expect(entry).toMatchObject({ aborted: true, completionTokens: 5 });
	});

	it("delays the first token by x-simulator-ttft-ms", async () => {
		const firstContentAfter = async (headers: Record<string, string>): Promise<number> => {
			const started = performance.now();
			const stream = await client.chat.completions.create({ ...request("timing"), stream: true }, { headers });
			let first = Number.NaN;
			for await (const chunk of stream) {
				if (Number.isNaN(first) && chunk.choices[0]?.delta.content) first = performance.now() - started;
			}
			return first;
		};
		const fast = await firstContentAfter({});
		const slow = await firstContentAfter({ "x-simulator-ttft-ms": "400" });
		expect(slow).toBeGreaterThanOrEqual(390);
		expect(slow - fast).toBeGreaterThanOrEqual(300);
	});

	it("spaces tokens by x-simulator-token-interval-ms", async () => {
		const started = performance.now();
		const chunks = await collect(
			await client.chat.completions.create(
				{ ...request("paced"), stream: true },
				{ headers: { "x-simulator-token-interval-ms": "30", "x-simulator-output-tokens": "10" } }
			)
		);
		expect(contentChunks(chunks)).toHaveLength(10);
		expect(performance.now() - started).toBeGreaterThanOrEqual(9 * 30 - 5);
	});

	it("close() ends hanging requests promptly", async () => {
		const other = await startSimulator({ hang: true });
		const otherClient = new OpenAI({ baseURL: other.baseURL, apiKey: "test", maxRetries: 0 });
		const stream = await otherClient.chat.completions.create({ ...request("hang"), stream: true });
		const consumed = (async () => {
			for await (const chunk of stream) void chunk;
		})().then(
			() => "ended",
			() => "errored"
		);
		const pending = otherClient.chat.completions.create(request("hang too")).then(
			() => "answered",
			() => "errored"
		);
		await sleep(100);
		const started = performance.now();
		await other.close();
		expect(performance.now() - started).toBeLessThan(500);
		await expect(pending).resolves.toBe("errored");
		await expect(consumed).resolves.toMatch(/ended|errored/);
		expect(other.requests().every(e => e.aborted)).toBe(true);
	});
});

// ---------------------------------------------------------------------------------------------
// Models, embeddings, moderations
// ---------------------------------------------------------------------------------------------

describe("models, embeddings and moderations", () => {
	it("lists the configured models", async () => {
		const models = [];
		for await (const model of client.models.list()) models.push(model);
		expect(models.map(m => m.id)).toEqual(["sim-small", "sim-medium", "sim-large"]);
		expect(models[0]).toMatchObject({ object: "model", owned_by: "chatmesh-simulator", created: expect.any(Number) });
	});

	it("returns deterministic unit-length embeddings", async () => {
		const first = await client.embeddings.create({ model: "sim-embed", input: ["alpha", "beta"] });
		const again = await client.embeddings.create({ model: "sim-embed", input: "alpha", encoding_format: "float" });
		expect(first.data).toHaveLength(2);
		const [alpha, beta] = first.data.map(d => Array.from(d.embedding));
		expect(alpha).toHaveLength(64);
		// base64 (the SDK default) and float decode to the same vector.
		expect(Array.from(again.data[0]?.embedding ?? [])).toEqual(alpha);
		expect(alpha).not.toEqual(beta);
		for (const vector of [alpha, beta]) {
			const norm = Math.sqrt((vector ?? []).reduce((sum, v) => sum + v * v, 0));
			expect(norm).toBeCloseTo(1, 5);
		}
		expect(first.usage.prompt_tokens).toBeGreaterThan(0);
		expect(first.usage.total_tokens).toBe(first.usage.prompt_tokens);

		const small = await client.embeddings.create({ model: "sim-embed", input: "alpha", dimensions: 16 });
		expect(small.data[0]?.embedding).toHaveLength(16);
	});

	it("flags inputs containing a configured word and passes clean text", async () => {
		const result = await client.moderations.create({ input: ["this is SimFlagged content", "a clean sentence about gardens"] });
		const [flagged, clean] = result.results;
		expect(flagged?.flagged).toBe(true);
		expect(flagged?.categories.harassment).toBe(true);
		expect(flagged?.category_scores.harassment).toBeGreaterThan(0.5);
		expect(clean?.flagged).toBe(false);
		expect(clean?.categories.harassment).toBe(false);
		expect(clean?.category_scores.harassment).toBeLessThan(0.1);

		try {
			sim.configure({ flaggedWords: ["gardens"] });
			const changed = await client.moderations.create({ input: "a clean sentence about gardens" });
			expect(changed.results[0]?.flagged).toBe(true);
		} finally {
			sim.resetConfig();
		}
	});
});

// ---------------------------------------------------------------------------------------------
// Control endpoints and the log
// ---------------------------------------------------------------------------------------------

describe("control endpoints and the request log", () => {
	it("changes knobs over HTTP and resets them", async () => {
		const posted = await fetch(`${sim.url}/_simulator/config`, { method: "POST", body: JSON.stringify({ outputTokens: 5 }) });
		expect(posted.status).toBe(200);
		try {
			expect(await (await fetch(`${sim.url}/_simulator/config`)).json()).toMatchObject({ outputTokens: 5, models: ["sim-small", "sim-medium", "sim-large"] });
			const answer = await client.chat.completions.create(request("configured length"));
			expect(answer.usage?.completion_tokens).toBe(5);
			// Headers still win over the process knob.
			const headed = await client.chat.completions.create(request("configured length"), { headers: { "x-simulator-output-tokens": "2" } });
			expect(headed.usage?.completion_tokens).toBe(2);

			const invalid = await fetch(`${sim.url}/_simulator/config`, { method: "POST", body: JSON.stringify({ errorRate: 3 }) });
			expect(invalid.status).toBe(400);
			expect(await invalid.json()).toMatchObject({ error: { param: "errorRate" } });
		} finally {
			const reset = await fetch(`${sim.url}/_simulator/config`, { method: "DELETE" });
			expect(reset.status).toBe(200);
		}
		expect(sim.options.outputTokens).toBe(24);
	});

	it("logs requests with their knob headers, never the Authorization header, and clears", async () => {
		const rid = requestId("log");
		await client.chat.completions.create(request("log me", { tools: TOOLS }), { headers: { "x-request-id": rid, "x-simulator-output-tokens": "6" } });
		const entry = await entryFor(rid);
		expect(entry).toMatchObject({
			method: "POST",
			path: "/v1/chat/completions",
			model: "sim-small",
			stream: false,
			messages: [{ role: "user", content: "log me" }],
			tools: ["calculator", "get_weather"],
			headers: { "x-request-id": rid, "x-simulator-output-tokens": "6" },
			status: 200,
			aborted: false,
			completionTokens: 6,
			finishReason: "stop",
			finished: true
		});
		expect(Object.keys(entry?.headers ?? {}).sort()).toEqual(["x-request-id", "x-simulator-output-tokens"]);
		expect(entry?.at).toBeGreaterThan(Date.now() - 60_000);

		const cleared = await fetch(`${sim.url}/_simulator/requests`, { method: "DELETE" });
		expect(cleared.status).toBe(200);
		expect(await logOverHttp()).toEqual([]);
		expect(sim.requests()).toEqual([]);
	});

	it("keeps only the last 1,000 entries", async () => {
		const other = await startSimulator();
		try {
			for (let batch = 0; batch < 21; batch++) {
				await Promise.all(Array.from({ length: 50 }, () => fetch(`${other.baseURL}/models`).then(r => r.arrayBuffer())));
			}
			const entries = other.requests();
			expect(entries).toHaveLength(1000);
			expect(entries[0]?.at).toBeLessThanOrEqual(entries[entries.length - 1]?.at ?? 0);
		} finally {
			await other.close();
		}
	});

	it("never crashes on odd input", async () => {
		const odd = [
			"null",
			"[]",
			'"text"',
			JSON.stringify({ model: "sim-small", messages: [null] }),
			JSON.stringify({ model: "sim-small", messages: [{ role: "user", content: { weird: true } }] }),
			JSON.stringify({ model: "sim-small", messages: [{ role: "user", content: `<|endoftext|> and a ${" ".repeat(20_000)}end` }] }),
			JSON.stringify({ model: "sim-small", messages: [{ role: "user", content: "x" }], max_tokens: -1 }),
			JSON.stringify({ model: 42, messages: [{ role: "user", content: "x" }] }),
			JSON.stringify({
				model: "sim-small",
				messages: [{ role: "user", content: "calculator {" }],
				tools: [{ type: "function", function: { name: "calculator" } }, null, 5]
			})
		];
		const statuses: number[] = [];
		for (const body of odd) {
			const response = await fetch(`${sim.baseURL}/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body });
			statuses.push(response.status);
			const json = (await response.json()) as { error?: unknown };
			if (response.status !== 200) expect(json.error).toBeDefined();
		}
		expect(statuses).toEqual([400, 400, 400, 400, 200, 200, 400, 400, 200]);
		// Still serving.
		const answer = await client.chat.completions.create(request("still alive?"));
		expect(answer.choices[0]?.finish_reason).toBe("stop");
	});
});
