/**
 * The OpenAI-compatible `/v1` surface, wire-compatible enough that the unmodified official SDK
 * works against chatmesh: `POST /v1/chat/completions` (stream and non-stream) and `GET /v1/models`.
 * This file is transport only: it parses and validates the OpenAI body and writes OpenAI frames.
 * Without `conversation_id` a request is one `conversation.complete` (which owns the checks);
 * with one, it runs as a chat turn of that conversation (stored, resumable) and its answer is
 * streamed in the same format.
 */
import type { ServerResponse } from "node:http";
import type { Context } from "moleculer";
import { z } from "zod";
import type { ChatmeshMeta } from "../../lib/auth";
import { BadRequestError, ERR_STREAM_INTERRUPTED, ERR_STREAM_UNAVAILABLE, httpStatusOf } from "../../lib/errors";
import type { GenerationLog } from "../../lib/generations/log";
import type { ChatMessage, FinishReason, ToolCall, ToolDefinition, Usage } from "../../lib/chat-protocol";
import type { CompleteParams, CompletionResult } from "../conversation/completion";
import { callSend } from "../conversation/client";
import { callCancellableStream } from "../llm/client";
import { readLineBatches } from "../llm/ndjson";
import { TickWriter } from "./tick-writer";
import type { ModelInfo } from "../llm/llm.service";

const textPart = z.object({ type: z.literal("text"), text: z.string() }).passthrough();
const toolCallSchema = z.object({
	id: z.string(),
	type: z.literal("function"),
	function: z.object({ name: z.string(), arguments: z.string() })
});
const messageSchema = z.object({
	role: z.enum(["system", "developer", "user", "assistant", "tool"]),
	content: z.union([z.string(), z.array(textPart), z.null()]).optional(),
	name: z.string().optional(),
	tool_calls: z.array(toolCallSchema).optional(),
	tool_call_id: z.string().optional()
});
const requestSchema = z.object({
	model: z.string().min(1).max(200).optional(),
	messages: z.array(messageSchema).min(1).max(1000),
	stream: z.boolean().optional(),
	stream_options: z.object({ include_usage: z.boolean().optional() }).passthrough().nullable().optional(),
	max_tokens: z.number().int().min(1).max(1_000_000).nullable().optional(),
	max_completion_tokens: z.number().int().min(1).max(1_000_000).nullable().optional(),
	temperature: z.number().min(0).max(2).nullable().optional(),
	tools: z
		.array(
			z.object({
				type: z.literal("function"),
				function: z.object({ name: z.string(), description: z.string().optional(), parameters: z.record(z.string(), z.unknown()).optional() })
			})
		)
		.optional(),
	conversation_id: z.string().uuid().optional()
});

export type ChatCompletionRequest = z.infer<typeof requestSchema>;

export function parseCompletionRequest(body: unknown): ChatCompletionRequest {
	const result = requestSchema.safeParse(body);
	if (!result.success) {
		const issue = result.error.issues[0];
		throw new BadRequestError(`Invalid request: ${issue.path.join(".") || "body"}: ${issue.message}`, { param: issue.path.join(".") });
	}
	return result.data;
}

function toChatMessages(req: ChatCompletionRequest): ChatMessage[] {
	return req.messages.map(m => ({
		role: m.role === "developer" ? "system" : m.role,
		content: Array.isArray(m.content) ? m.content.map(p => p.text).join("") : (m.content ?? null),
		...(m.tool_calls ? { tool_calls: m.tool_calls as ToolCall[] } : {}),
		...(m.tool_call_id ? { tool_call_id: m.tool_call_id } : {}),
		...(m.name ? { name: m.name } : {})
	}));
}

const openAiUsage = (u: Usage) => ({ prompt_tokens: u.promptTokens, completion_tokens: u.completionTokens, total_tokens: u.promptTokens + u.completionTokens });
const finishOf = (reason: FinishReason | undefined) => (reason === "cancelled" || !reason ? "stop" : reason);

/** Writes chat.completion.chunk frames; the frames of one tick leave together. */
class ChunkWriter {
	private readonly created = Math.floor(Date.now() / 1000);
	private readonly out: TickWriter;
	constructor(
		private readonly res: ServerResponse,
		private readonly id: string,
		private model: string
	) {
		this.out = new TickWriter(res);
	}

	open(headers: Record<string, string>): void {
		this.res.socket?.setNoDelay(true);
		this.res.writeHead(200, {
			...headers,
			"Content-Type": "text/event-stream; charset=utf-8",
			"Cache-Control": "no-cache",
			Connection: "keep-alive",
			"X-Accel-Buffering": "no"
		});
	}

	setModel(model: string): void {
		this.model = model;
	}

	private frame(choices: unknown[], extra: Record<string, unknown> = {}): void {
		this.out.write(
			`data: ${JSON.stringify({ id: this.id, object: "chat.completion.chunk", created: this.created, model: this.model, choices, ...extra })}\n\n`
		);
	}

	role(): void {
		this.frame([{ index: 0, delta: { role: "assistant", content: "" }, finish_reason: null }]);
	}

	delta(content: string): void {
		this.frame([{ index: 0, delta: { content }, finish_reason: null }]);
	}

	toolCalls(calls: ToolCall[]): void {
		this.frame([{ index: 0, delta: { tool_calls: calls.map((c, index) => ({ index, ...c })) }, finish_reason: null }]);
	}

	finish(reason: string): void {
		this.frame([{ index: 0, delta: {}, finish_reason: reason }]);
	}

	usage(u: Usage): void {
		this.frame([], { usage: openAiUsage(u) });
	}

	error(err: { code: string; message: string }): void {
		this.out.write(`data: ${JSON.stringify({ error: { message: err.message, type: "api_error", code: err.code } })}\n\n`);
	}

	end(): void {
		this.out.end("data: [DONE]\n\n");
	}
}

export interface CompletionDeps {
	ctx: Context<unknown, ChatmeshMeta>;
	res: ServerResponse;
	body: ChatCompletionRequest;
	generations: GenerationLog;
	headers: Record<string, string>;
}

/** A stateless completion: `conversation.complete` judges, charges and checks it; this writes its frames. */
export async function passthroughCompletion({ ctx, res, body, headers }: CompletionDeps): Promise<void> {
	const generationId = crypto.randomUUID();
	const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? undefined;
	const params: CompleteParams = {
		generationId,
		messages: toChatMessages(body),
		...(body.model ? { model: body.model } : {}),
		...(body.tools ? { tools: body.tools as ToolDefinition[] } : {}),
		...(maxTokens ? { maxTokens } : {}),
		...(typeof body.temperature === "number" ? { temperature: body.temperature } : {})
	};
	const id = `chatcmpl-${generationId.replaceAll("-", "")}`;
	if (!body.stream) {
		const answer = await ctx.call<CompletionResult, CompleteParams>("conversation.complete", params);
		res.writeHead(200, { ...headers, "Content-Type": "application/json; charset=utf-8" });
		res.end(
			JSON.stringify({
				id,
				object: "chat.completion",
				created: Math.floor(Date.now() / 1000),
				model: answer.model,
				choices: [
					{
						index: 0,
						message: { role: "assistant", content: answer.content, ...(answer.toolCalls?.length ? { tool_calls: answer.toolCalls } : {}) },
						finish_reason: finishOf(answer.finishReason),
						logprobs: null
					}
				],
				usage: openAiUsage(answer.usage)
			})
		);
		return;
	}

	// Destroying a stream produced on another node does not reach it; this helper broadcasts the cancel then.
	const stream = await callCancellableStream(ctx, "conversation.complete", { ...params, stream: true });
	const writer = new ChunkWriter(res, id, body.model ?? "");
	writer.open(headers);
	// The client left: stop the model too (a stateless request has no one else to answer). The
	// response's "close" marks the connection's end; the request's fires once its body is read.
	const abandon = () => {
		if (!res.writableFinished) stream.destroy();
	};
	res.on("close", abandon);
	try {
		await readLineBatches(stream, lines => {
			for (const line of lines) {
				if (line.type === "start") {
					writer.setModel(line.model);
					writer.role();
				} else if (line.type === "delta") writer.delta(line.content);
				else if (line.type === "tool_calls") writer.toolCalls(line.toolCalls);
				else if (line.type === "end") {
					writer.finish(finishOf(line.finishReason));
					if (body.stream_options?.include_usage) writer.usage(line.usage);
				} else if (line.type === "error") writer.error(line);
			}
		});
	} catch (err) {
		if (!res.writableEnded) writer.error({ code: ERR_STREAM_INTERRUPTED, message: (err as Error).message });
	} finally {
		res.off("close", abandon);
		if (!res.writableEnded) writer.end();
	}
}

/** A completion stored into a conversation: its last user message runs as that conversation's turn. */
export async function conversationCompletion({ ctx, res, body, generations, headers }: CompletionDeps): Promise<void> {
	const last = [...body.messages].reverse().find(m => m.role === "user");
	const content = Array.isArray(last?.content) ? last.content.map(p => p.text).join("") : last?.content;
	if (!content) throw new BadRequestError("A conversation request needs a user message", { param: "messages" });
	const sent = await callSend(ctx, {
		conversationId: body.conversation_id,
		content,
		...(body.model ? { model: body.model } : {})
	});
	const id = `chatcmpl-${sent.generationId.replaceAll("-", "")}`;
	const writer = new ChunkWriter(res, id, body.model ?? "");
	let text = "";
	let final: { usage: Usage; reason: string; error?: { code: string; message: string } } | undefined;
	if (body.stream) {
		writer.open({ ...headers, "X-Conversation-Id": sent.conversationId, "X-Generation-Id": sent.generationId });
		writer.role();
	}
	await new Promise<void>(resolve => {
		const unsubscribe = generations.subscribe(
			sent.generationId,
			0,
			e => {
				if (e.type === "chunk") {
					text += e.delta;
					if (body.stream) writer.delta(e.delta);
				} else if (e.type === "done") final = { usage: e.usage, reason: finishOf(e.finishReason) };
				else if (e.type === "error") final = { usage: e.usage ?? { promptTokens: 0, completionTokens: 0 }, reason: "stop", error: e };
			},
			() => resolve(),
			err => {
				final = { usage: { promptTokens: 0, completionTokens: 0 }, reason: "stop", error: { code: ERR_STREAM_UNAVAILABLE, message: err.message } };
				resolve();
			}
		);
		// A client leaving does not cancel a stored turn: it completes and is kept.
		res.on("close", () => {
			unsubscribe();
			resolve();
		});
	});
	if (body.stream) {
		if (final?.error) writer.error(final.error);
		if (final) writer.finish(final.reason);
		if (final && body.stream_options?.include_usage) writer.usage(final.usage);
		if (!res.writableEnded) writer.end();
		return;
	}
	if (final?.error) {
		const status = httpStatusOf({ type: final.error.code }) >= 500 ? 502 : 400;
		res.writeHead(status, { ...headers, "Content-Type": "application/json; charset=utf-8" });
		res.end(JSON.stringify({ error: { message: final.error.message, type: "api_error", code: final.error.code } }));
		return;
	}
	res.writeHead(200, { ...headers, "Content-Type": "application/json; charset=utf-8", "X-Conversation-Id": sent.conversationId });
	res.end(
		JSON.stringify({
			id,
			object: "chat.completion",
			created: Math.floor(Date.now() / 1000),
			model: body.model ?? "",
			choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: final?.reason ?? "stop", logprobs: null }],
			usage: openAiUsage(final?.usage ?? { promptTokens: 0, completionTokens: 0 }),
			conversation_id: sent.conversationId
		})
	);
}

/** `GET /v1/models` in OpenAI's list shape. */
export function modelList(models: ModelInfo[]) {
	const created = Math.floor(Date.now() / 1000);
	return { object: "list", data: models.map(m => ({ id: m.id, object: "model", created, owned_by: m.provider })) };
}

/** Errors on /v1 in OpenAI's shape, so SDKs surface them as their own error types. */
export function openAiError(status: number, err: { message: string; type: string; data?: unknown }) {
	const kind = status === 401 ? "authentication_error" : status === 429 ? "rate_limit_error" : status >= 500 ? "api_error" : "invalid_request_error";
	const param = (err.data as { param?: string } | undefined)?.param ?? null;
	return { error: { message: err.message, type: kind, param, code: err.type } };
}
