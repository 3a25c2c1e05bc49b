/**
 * A stateless completion (`conversation.complete`, behind `/v1/chat/completions` without a
 * conversation): the same gates as a chat turn, in one place. Every message of the request is
 * judged by the content policy before any model call, the quota is reserved, the model answers,
 * its output is checked in the turn's overlapping windows (a block stops the answer and ends it
 * with CONTENT_BLOCKED), and the quota is settled with what was really used.
 *
 * Streaming: the answer is an object-mode NDJSON stream of `LlmStreamLine`s, as `llm.stream`
 * returns. Destroying it destroys the model's stream (which broadcasts the cancel); a consumer on
 * another node broadcasts `generation.cancel` for the completion's generationId itself (see
 * `callCancellableStream`), which reaches the llm node directly.
 */
import type { Readable } from "node:stream";
import type { Context, ServiceBroker } from "moleculer";
import type { ChatmeshMeta } from "../../lib/auth";
import type { ChatMessage, FinishReason, LlmStreamLine, ToolCall, Usage } from "../../lib/chat-protocol";
import { ContentBlockedError, ERR_CONTENT_BLOCKED, ERR_STREAM_INTERRUPTED } from "../../lib/errors";
import { recordChatRequest, type RequestStatus } from "../../lib/metrics";
import { persistOrGiveUp } from "../../lib/persist";
import { countPromptTokens, countTokens } from "../../lib/token-count";
import { callLlmStream } from "../llm/client";
import { LineStream, readLineBatches } from "../llm/ndjson";
import type { ChatParams, ChatResult, StreamParams } from "../llm/params";
import { assertInputAllowed, OutputChecks } from "../moderation/client";
import { SETTLE_RETRY_MS, STREAM_MARGIN_MS } from "./turn-steps";

export interface CompleteParams extends Omit<StreamParams, "maxTokens"> {
	stream?: boolean;
	maxTokens?: number;
}

export interface CompletionResult {
	generationId: string;
	content: string;
	toolCalls: ToolCall[];
	finishReason: FinishReason;
	usage: Usage;
	model: string;
}

export const COMPLETION_BLOCKED_MESSAGE = "The answer was stopped by the content policy";
const NO_USAGE: Usage = { promptTokens: 0, completionTokens: 0 };

/**
 * The rule for a request that carries its own history: the client wrote all of it, so every
 * message (user, system, developer, assistant, tool) and every `name` is judged as input, in
 * parallel; one block refuses the request.
 */
export async function assertMessagesAllowed(ctx: Context<unknown, ChatmeshMeta>, messages: ChatMessage[]): Promise<void> {
	const texts = new Set<string>();
	for (const m of messages) {
		if (m.content?.trim()) texts.add(m.content);
		if (m.name?.trim()) texts.add(m.name);
	}
	await Promise.all([...texts].map(text => assertInputAllowed(ctx, text)));
}

/** Runs one stateless completion; a stream when `stream` is set, else the whole answer. */
/** The bounds of a completion: the configured output cap and the llm node's own timeouts. */
export interface CompletionLimits {
	maxOutputTokens: number;
	firstTokenTimeoutMs: number;
	idleTimeoutMs: number;
}

export async function complete(ctx: Context<CompleteParams, ChatmeshMeta>, limits: CompletionLimits): Promise<Readable | CompletionResult> {
	const { maxOutputTokens } = limits;
	const { stream, maxTokens: asked, ...rest } = ctx.params;
	const maxTokens = Math.min(asked ?? maxOutputTokens, maxOutputTokens);
	const params: StreamParams = { ...rest, maxTokens };
	await assertMessagesAllowed(ctx, params.messages);
	const reservationId = `${params.generationId}:1`;
	await ctx.call("quota.reserve", { reservationId, tokens: countPromptTokens(params.messages) + maxTokens });
	const settle = settler(ctx, reservationId);
	const started = performance.now();
	const record = (status: RequestStatus, model: string | null, provider: string | null) =>
		recordChatRequest(ctx.broker, status, model, provider, (performance.now() - started) / 1000);
	if (!stream) return completeWhole(ctx, params, settle, record);
	const upstream = await callLlmStream(ctx, params, { timeout: limits.firstTokenTimeoutMs + STREAM_MARGIN_MS }).catch(async (err: unknown) => {
		record("failed", params.model ?? null, providerOf(err));
		await settle(NO_USAGE);
		throw err;
	});
	return pipeChecked(ctx.broker, params, upstream, settle, limits.idleTimeoutMs + STREAM_MARGIN_MS, record);
}

type RecordRequest = (status: RequestStatus, model: string | null, provider: string | null) => void;

/** How a streamed completion ended, by its last line (none: the consumer left, which stops it). */
function streamStatus(last: LlmStreamLine | undefined): RequestStatus {
	if (last?.type === "end") return last.finishReason === "cancelled" ? "cancelled" : "completed";
	if (last?.type === "error") return last.code === ERR_STREAM_INTERRUPTED ? "interrupted" : "failed";
	return "cancelled";
}

/** The provider named in a model failure's data, when there is one. */
function providerOf(err: unknown): string | null {
	const provider = (err as { data?: { provider?: unknown } }).data?.provider;
	return typeof provider === "string" ? provider : null;
}

/**
 * Settles a reservation once. Policy: tried again while the quota's store or link is away; past
 * that, logged, and the stale reservation is released by the quota's schedule.
 */
function settler(ctx: Context<unknown, ChatmeshMeta>, reservationId: string): (usage: Usage) => Promise<void> {
	// The stream outlives the action's context, so the settle is a call of its own, not a child of ctx.
	const opts = { meta: { user: ctx.meta.user } };
	const { broker } = ctx;
	return async usage => {
		await persistOrGiveUp(() => broker.call("quota.settle", { reservationId, usage }, opts), {
			maxRetryTimeMs: SETTLE_RETRY_MS,
			logger: broker.logger,
			what: "Quota settle",
			details: { reservationId }
		});
	};
}

async function completeWhole(
	ctx: Context<unknown, ChatmeshMeta>,
	params: StreamParams,
	settle: (usage: Usage) => Promise<void>,
	record: RecordRequest
): Promise<CompletionResult> {
	let answer: ChatResult;
	try {
		answer = await ctx.call<ChatResult, ChatParams>("llm.chat", params);
	} catch (err) {
		record("failed", params.model ?? null, providerOf(err));
		await settle(NO_USAGE);
		throw err;
	}
	await settle(answer.usage);
	// The same windows as a streamed answer, so a phrase split anywhere is caught alike.
	const checks = new OutputChecks(ctx.broker, ctx.broker.logger, () => {});
	checks.push(answer.content);
	await checks.finish();
	record(checks.blocked ? "blocked" : answer.finishReason === "cancelled" ? "cancelled" : "completed", answer.model, answer.provider);
	if (checks.blocked) throw new ContentBlockedError(COMPLETION_BLOCKED_MESSAGE, { reasons: checks.blocked });
	const { generationId, content, toolCalls, finishReason, usage, model } = answer;
	return { generationId, content, toolCalls, finishReason, usage, model };
}

/** Forwards the model's lines, checking the output as it goes; settles the quota at the end. */
function pipeChecked(
	broker: ServiceBroker,
	params: StreamParams,
	upstream: Readable,
	settle: (usage: Usage) => Promise<void>,
	idleMs: number,
	record: RecordRequest
): Readable {
	let answeredBy: { model: string; provider: string } | undefined;
	let charged: Usage | undefined;
	let produced = "";
	let blocked = false;
	// The consumer left: stop the model (destroying its stream broadcasts the cancel).
	const out = new LineStream(() => upstream.destroy());
	const checks = new OutputChecks(broker, broker.logger, reasons => {
		blocked = true;
		out.send({ type: "error", code: ERR_CONTENT_BLOCKED, message: `${COMPLETION_BLOCKED_MESSAGE} (${reasons.join("; ")})` });
		out.finish();
		upstream.destroy();
	});
	const forward = (line: LlmStreamLine) => {
		if (line.type === "start") answeredBy = { model: line.model, provider: line.provider };
		else if (line.type === "delta") {
			produced += line.content;
			checks.push(line.content);
		} else if (line.type === "end" || line.type === "error") charged = line.usage ?? charged;
		// The answer's end waits for the last window's verdict.
		if (line.type !== "end" && line.type !== "error") out.send(line);
	};
	let last: LlmStreamLine | undefined;
	void readLineBatches(
		upstream,
		lines => {
			for (const line of lines) {
				if (blocked) return;
				if (line.type === "end" || line.type === "error") last = line;
				forward(line);
			}
		},
		{ idleMs }
	)
		.catch((err: unknown) => {
			if (!blocked && !out.destroyed) last ??= { type: "error", code: ERR_STREAM_INTERRUPTED, message: (err as Error).message };
		})
		.then(() => checks.finish())
		.then(async () => {
			if (!blocked && last) out.send(last);
			if (!blocked) out.finish();
			record(blocked ? "blocked" : streamStatus(last), answeredBy?.model ?? params.model ?? null, answeredBy?.provider ?? null);
			// A stream that ended without usage (the client left, the producer died) pays for what it produced.
			await settle(charged ?? (produced ? { promptTokens: countPromptTokens(params.messages), completionTokens: countTokens(produced) } : NO_USAGE));
		})
		.catch((err: unknown) => broker.logger.error("Completion stream could not be finished", { generationId: params.generationId, err }));
	return out;
}
