/**
 * The llm actions' parameters: fastest-validator rules and the TypeScript types they admit.
 */
import type { ActionParams } from "moleculer";
import type { ChatMessage, FinishReason, ToolCall, ToolDefinition, Usage } from "../../lib/chat-protocol";

export interface GenerateParams {
	messages: ChatMessage[];
	/** A model some provider serves; absent: the router picks one. */
	model?: string;
	tools?: ToolDefinition[];
	maxTokens?: number;
	temperature?: number;
}

export interface StreamParams extends GenerateParams {
	/** Names the generation for cancel (`generation.cancel`) and logs. */
	generationId: string;
}

export interface ChatParams extends GenerateParams {
	generationId?: string;
}

export interface ChatResult {
	generationId: string;
	/** The answer's text ("" when it only asked for tools). */
	content: string;
	toolCalls: ToolCall[];
	finishReason: FinishReason;
	usage: Usage;
	usageSource: "provider" | "tokenizer";
	model: string;
	provider: string;
}

export interface RouteParams {
	messages: ChatMessage[];
}

export interface CancelParams {
	generationId: string;
}

const toolCallRule = {
	type: "object",
	props: {
		id: { type: "string", min: 1, max: 256 },
		type: { type: "equal", value: "function" },
		function: {
			type: "object",
			props: { name: { type: "string", min: 1, max: 256 }, arguments: { type: "string", max: 1_000_000 } }
		}
	}
} as const;

const messagesRule = {
	type: "array",
	min: 1,
	max: 10_000,
	items: {
		type: "object",
		props: {
			role: { type: "enum", values: ["system", "user", "assistant", "tool"] },
			content: { type: "string", nullable: true, max: 4_000_000 },
			tool_calls: { type: "array", optional: true, max: 128, items: toolCallRule },
			tool_call_id: { type: "string", optional: true, min: 1, max: 256 },
			name: { type: "string", optional: true, min: 1, max: 256 }
		}
	}
} as const;

const toolDefinitionRule = {
	type: "object",
	props: {
		type: { type: "equal", value: "function" },
		function: {
			type: "object",
			props: {
				name: { type: "string", pattern: /^[A-Za-z0-9_-]{1,64}$/ },
				description: { type: "string", optional: true, max: 10_000 },
				parameters: { type: "object", optional: true }
			}
		}
	}
} as const;

export const generateRules = {
	messages: messagesRule,
	model: { type: "string", optional: true, min: 1, max: 256 },
	tools: { type: "array", optional: true, max: 128, items: toolDefinitionRule },
	maxTokens: { type: "number", optional: true, integer: true, positive: true, max: 1_000_000 },
	temperature: { type: "number", optional: true, min: 0, max: 2 }
} as const;

export const streamRules: ActionParams = { generationId: { type: "uuid" }, ...generateRules };
export const chatRules: ActionParams = { generationId: { type: "uuid", optional: true }, ...generateRules };
export const routeRules: ActionParams = { messages: messagesRule };
export const cancelRules: ActionParams = { generationId: { type: "uuid" } };
