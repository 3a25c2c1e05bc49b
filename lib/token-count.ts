/**
 * Token counting with gpt-tokenizer (o200k_base), shared by the llm service (usage when a
 * provider sends none) and the chat turn (quota estimates before a model call).
 */
import { countTokens } from "gpt-tokenizer";
import type { ChatMessage } from "./chat-protocol";

/** OpenAI's chat format overhead: tokens per message, and the reply priming. */
const TOKENS_PER_MESSAGE = 3;
const TOKENS_PER_NAME = 1;
const REPLY_PRIMING_TOKENS = 3;

/** The prompt's tokens, counted the way OpenAI's cookbook counts chat messages. */
export function countPromptTokens(messages: readonly ChatMessage[]): number {
	let total = REPLY_PRIMING_TOKENS;
	for (const message of messages) {
		total += TOKENS_PER_MESSAGE + countTokens(message.role) + countTokens(message.content ?? "");
		if (message.name) total += TOKENS_PER_NAME + countTokens(message.name);
		for (const call of message.tool_calls ?? []) total += countTokens(call.function.name) + countTokens(call.function.arguments);
	}
	return total;
}

export { countTokens };
