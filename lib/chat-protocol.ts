/**
 * The shapes that cross services during a chat turn. The llm service streams `LlmStreamLine`s
 * (NDJSON) to the turn owner; the turn owner appends `GenerationEvent`s to the generation log,
 * which every gateway node reads to serve clients (live, or replayed from a sequence number).
 */

/** An OpenAI-style chat message as chatmesh passes it to providers. */
export interface ChatMessage {
	role: "system" | "user" | "assistant" | "tool";
	content: string | null;
	/** Assistant messages that asked for tools. */
	tool_calls?: ToolCall[];
	/** Tool messages: the call they answer. */
	tool_call_id?: string;
	name?: string;
}

export interface ToolCall {
	id: string;
	type: "function";
	function: { name: string; arguments: string };
}

/** An OpenAI tool definition offered to the model. */
export interface ToolDefinition {
	type: "function";
	function: { name: string; description?: string; parameters?: Record<string, unknown> };
}

export interface Usage {
	promptTokens: number;
	completionTokens: number;
}

export type FinishReason = "stop" | "length" | "tool_calls" | "content_filter" | "cancelled";

/** One NDJSON line of `llm.stream`'s response stream, in this order: start, delta*, tool_calls?, end | error. */
export type LlmStreamLine =
	| { type: "start"; generationId: string; model: string; provider: string; nodeID: string }
	| { type: "delta"; content: string }
	| { type: "tool_calls"; toolCalls: ToolCall[] }
	| { type: "end"; finishReason: FinishReason; usage: Usage; usageSource: "provider" | "tokenizer" }
	| { type: "error"; code: string; message: string; usage?: Usage };

/** Terminal states of an assistant message. */
export type FinalStatus = "completed" | "cancelled" | "failed" | "interrupted" | "blocked";

/** What the generation log holds for one generation, in order; `seq` starts at 1. */
export type GenerationEvent = { seq: number } & (
	| { type: "chunk"; delta: string }
	| { type: "tool:start"; calls: Array<{ id: string; name: string; arguments: string }> }
	| { type: "tool:result"; results: Array<{ id: string; name: string; status: "success" | "error"; output: string; durationMs: number }> }
	| { type: "done"; messageId: string; status: FinalStatus; usage: Usage; finishReason?: FinishReason }
	| { type: "error"; messageId: string; status: FinalStatus; code: string; message: string; usage?: Usage }
);

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;
/** An event before the log numbers it. */
export type GenerationEventInput = DistributiveOmit<GenerationEvent, "seq">;

export const isTerminal = (e: Pick<GenerationEvent, "type">): boolean => e.type === "done" || e.type === "error";

/** Who may read a generation, and where it stands. */
export interface GenerationMeta {
	generationId: string;
	ownerId: string;
	conversationId: string | null;
	messageId: string;
	/** "running" until the terminal event is appended. */
	state: "running" | "finished";
}
