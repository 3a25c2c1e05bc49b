import { countTokens } from "gpt-tokenizer";
import type { ChatCompletionChunk } from "openai/resources/chat/completions";
import { describe, expect, it } from "vitest";
import { Accumulator } from "../../services/llm/accumulator";

// The accumulator folds OpenAI-style stream chunks into the answer: text, tool calls reassembled
// from their deltas, the finish reason, and the usage (the provider's, or counted).

type Choice = ChatCompletionChunk.Choice;

function chunk(delta: Choice["delta"], extra: { finish?: Choice["finish_reason"]; usage?: ChatCompletionChunk["usage"] } = {}): ChatCompletionChunk {
	return {
		id: "c",
		object: "chat.completion.chunk",
		created: 0,
		model: "m",
		choices: [{ index: 0, delta, finish_reason: extra.finish ?? null }],
		...(extra.usage ? { usage: extra.usage } : {})
	};
}

const usageOnly = (prompt: number, completion: number): ChatCompletionChunk => ({
	id: "c",
	object: "chat.completion.chunk",
	created: 0,
	model: "m",
	choices: [],
	usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion }
});

const toolDelta = (index: number, fn: { name?: string; arguments?: string }, id?: string): Choice["delta"] => ({
	tool_calls: [{ index, ...(id ? { id } : {}), function: fn }]
});

const GENERATION_ID = "0b6f2a4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b";

describe("Accumulator", () => {
	it("adds up the text and returns what each chunk added", () => {
		const acc = new Accumulator(GENERATION_ID, () => 7);
		expect(acc.add(chunk({ role: "assistant" }))).toBe("");
		expect(acc.add(chunk({ content: "Hello" }))).toBe("Hello");
		expect(acc.add(chunk({ content: ", world" }))).toBe(", world");
		expect(acc.add(usageOnly(1, 2))).toBe("");
		expect(acc.content).toBe("Hello, world");
	});

	it("reassembles tool calls from argument fragments, by index, in index order, keeping a repeated name whole", () => {
		const acc = new Accumulator(GENERATION_ID, () => 0);
		acc.add(chunk(toolDelta(1, { name: "search", arguments: '{"q":' }, "call_b")));
		acc.add(chunk(toolDelta(0, { name: "calc", arguments: "" }, "call_a")));
		acc.add(chunk(toolDelta(1, { arguments: '"cats"}' })));
		acc.add(chunk(toolDelta(0, { name: "calc", arguments: '{"x":1}' })));
		expect(acc.toolCalls()).toEqual([
			{ id: "call_a", type: "function", function: { name: "calc", arguments: '{"x":1}' } },
			{ id: "call_b", type: "function", function: { name: "search", arguments: '{"q":"cats"}' } }
		]);
	});

	it("gives a tool call without an id one made from the generation id and its index", () => {
		const acc = new Accumulator(GENERATION_ID, () => 0);
		acc.add(chunk(toolDelta(2, { name: "f", arguments: "{}" })));
		expect(acc.toolCalls()[0].id).toBe("call_0b6f2a4e1c2d4e5f_2");
	});

	it("maps the provider's finish reason, and stop after tool calls to tool_calls", () => {
		const finishing = (reason: Choice["finish_reason"]) => {
			const acc = new Accumulator(GENERATION_ID, () => 0);
			acc.add(chunk({ content: "x" }, { finish: reason }));
			return acc;
		};
		expect(finishing("length").finishReason()).toBe("length");
		expect(finishing("content_filter").finishReason()).toBe("content_filter");
		expect(finishing("function_call").finishReason()).toBe("tool_calls");
		expect(finishing("stop").finishReason()).toBe("stop");
		expect(finishing("length").rawFinishReason).toBe("length");
		expect(new Accumulator(GENERATION_ID, () => 0).finishReason()).toBe("stop");

		const tools = new Accumulator(GENERATION_ID, () => 0);
		tools.add(chunk(toolDelta(0, { name: "f", arguments: "{}" }, "id")));
		tools.add(chunk({}, { finish: "stop" }));
		expect(tools.finishReason()).toBe("tool_calls");
	});

	it("reports the provider's usage when it sent one", () => {
		const acc = new Accumulator(GENERATION_ID, () => 999);
		acc.add(chunk({ content: "hi" }));
		acc.add(usageOnly(12, 34));
		expect(acc.usage()).toEqual({ usage: { promptTokens: 12, completionTokens: 34 }, usageSource: "provider" });
	});

	it("counts the usage with the tokenizer when the provider sent none: the prompt, the text and the tool calls", () => {
		let promptAsked = 0;
		const acc = new Accumulator(GENERATION_ID, () => {
			promptAsked += 1;
			return 42;
		});
		acc.add(chunk({ content: "The quick brown fox" }));
		acc.add(chunk(toolDelta(0, { name: "lookup", arguments: '{"word":"fox"}' }, "id")));
		const expected = countTokens("The quick brown fox") + countTokens("lookup") + countTokens('{"word":"fox"}');
		expect(acc.usage()).toEqual({ usage: { promptTokens: 42, completionTokens: expected }, usageSource: "tokenizer" });
		expect(promptAsked).toBe(1);
	});

	it("tells token chunks (text, a tool call, the finish) from role-only and usage-only chunks", () => {
		expect(Accumulator.isToken(chunk({ content: "a" }))).toBe(true);
		expect(Accumulator.isToken(chunk(toolDelta(0, { name: "f" })))).toBe(true);
		expect(Accumulator.isToken(chunk({}, { finish: "stop" }))).toBe(true);
		expect(Accumulator.isToken(chunk({ role: "assistant" }))).toBe(false);
		expect(Accumulator.isToken(chunk({ content: "" }))).toBe(false);
		expect(Accumulator.isToken(usageOnly(1, 1))).toBe(false);
	});
});
