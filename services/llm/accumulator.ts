/**
 * What one generation has produced so far, built from OpenAI-style stream chunks: the text,
 * the tool calls reassembled from their deltas, the finish reason and the provider's usage.
 * When the provider sends no usage (cancelled, failed, or a server that ignores
 * `stream_options.include_usage`), usage is counted with gpt-tokenizer (o200k_base): an estimate
 * for other tokenizers, and `usageSource` says so.
 */
import { countTokens } from "gpt-tokenizer";
import type { ChatCompletionChunk } from "openai/resources/chat/completions";
import type { FinishReason, ToolCall, Usage } from "../../lib/chat-protocol";

export { countPromptTokens } from "../../lib/token-count";

function finishReasonOf(raw: string): FinishReason {
	switch (raw) {
		case "length":
			return "length";
		case "tool_calls":
		case "function_call":
			return "tool_calls";
		case "content_filter":
			return "content_filter";
		default:
			return "stop";
	}
}

interface PartialCall {
	id?: string;
	name: string;
	arguments: string;
}

export class Accumulator {
	/** All text received. */
	content = "";
	/** The provider's finish_reason, once it sent one. */
	rawFinishReason: string | null = null;
	private providerUsage: Usage | null = null;
	private readonly calls = new Map<number, PartialCall>();

	constructor(
		private readonly generationId: string,
		private readonly promptTokens: () => number
	) {}

	/** Folds one chunk in; returns the text it added (empty when none). */
	add(chunk: ChatCompletionChunk): string {
		if (chunk.usage) this.providerUsage = { promptTokens: chunk.usage.prompt_tokens, completionTokens: chunk.usage.completion_tokens };
		const choice = chunk.choices?.[0];
		if (!choice) return "";
		if (choice.finish_reason) this.rawFinishReason = choice.finish_reason;
		for (const delta of choice.delta?.tool_calls ?? []) {
			const call = this.calls.get(delta.index) ?? { name: "", arguments: "" };
			if (delta.id) call.id = delta.id;
			// Names come whole (some servers repeat them); arguments come in fragments.
			if (delta.function?.name) call.name = delta.function.name;
			if (delta.function?.arguments) call.arguments += delta.function.arguments;
			this.calls.set(delta.index, call);
		}
		const text = choice.delta?.content ?? "";
		this.content += text;
		return text;
	}

	/** Whether the chunk carries the answer itself (text, a tool call or the finish), not just a role or usage. */
	static isToken(chunk: ChatCompletionChunk): boolean {
		const choice = chunk.choices?.[0];
		return Boolean(choice && (choice.delta?.content || choice.delta?.tool_calls?.length || choice.finish_reason));
	}

	toolCalls(): ToolCall[] {
		return [...this.calls.entries()]
			.sort(([a], [b]) => a - b)
			.map(([index, call]) => ({
				id: call.id ?? `call_${this.generationId.replaceAll("-", "").slice(0, 16)}_${index}`,
				type: "function" as const,
				function: { name: call.name, arguments: call.arguments }
			}));
	}

	finishReason(): FinishReason {
		const reason = finishReasonOf(this.rawFinishReason ?? "stop");
		// Some servers (Ollama, older vLLM) say "stop" after tool calls.
		return reason === "stop" && this.calls.size > 0 ? "tool_calls" : reason;
	}

	/** The provider's usage when it sent one, else counted: the prompt, and every token received so far. */
	usage(): { usage: Usage; usageSource: "provider" | "tokenizer" } {
		if (this.providerUsage) return { usage: this.providerUsage, usageSource: "provider" };
		let completionTokens = countTokens(this.content);
		for (const call of this.calls.values()) completionTokens += countTokens(call.name) + countTokens(call.arguments);
		return { usage: { promptTokens: this.promptTokens(), completionTokens }, usageSource: "tokenizer" };
	}
}
