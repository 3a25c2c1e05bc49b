/**
 * What the job kinds ask of other services, always with the job's context (its meta names the
 * owner as the caller, so owner checks and quota apply as for the owner's own requests):
 * a model answer through `conversation.complete` (moderation of the prompt and the answer, quota
 * reserved and settled), and conversations and messages, page by page.
 *
 * A cancel stops the model at once: the job's abort signal broadcasts `generation.cancel` for the
 * completion's generation, which reaches the llm node producing it, and the waiting step ends
 * with the abort. Failures leave as they are: the engine decides which another delivery may cure
 * (services/jobs/retry.ts).
 */
import { randomUUID } from "node:crypto";
import type { ChatMessage } from "../../../lib/chat-protocol";
import { UpstreamError } from "../../../lib/errors";
import type { CompleteParams, CompletionResult } from "../../conversation/completion";
import type { ConversationView, MessageView } from "../../conversation/store";
import { CANCEL_EVENT } from "../../llm/client";
import type { CancelParams } from "../../llm/params";
import type { JobContext } from "../kind";

/** Conversations and messages are read in pages of the actions' largest size. */
export const PAGE_SIZE = 100;

export interface Page<T> {
	items: T[];
	nextCursor: string | null;
}

export interface ModelRequest {
	messages: ChatMessage[];
	/** Bound on the answer's length (also what the quota reserves). */
	maxTokens: number;
}

/**
 * One model answer for the job's owner (charged to them), as `conversation.complete` gives it
 * whole. The job's cancel stops the generation and ends the wait at once with the abort.
 */
export async function askModel(job: JobContext<unknown>, request: ModelRequest): Promise<string> {
	job.signal.throwIfAborted();
	const generationId = randomUUID();
	const params: CompleteParams = { generationId, messages: request.messages, maxTokens: request.maxTokens, stream: false };
	// No call timeout: the llm node bounds the answer with its first-token and idle timeouts.
	const answer = job.ctx.call<CompletionResult, CompleteParams>("conversation.complete", params, { timeout: 0 });
	const result = await new Promise<CompletionResult>((resolve, reject) => {
		const onAbort = () => {
			Promise.resolve(job.ctx.broadcast<CancelParams>(CANCEL_EVENT, { generationId })).catch((err: unknown) =>
				// Policy: a node that cannot broadcast is leaving; its generation ends with it.
				job.ctx.broker.logger.warn("A cancelled job's model call could not be stopped", { jobId: job.jobId, generationId, err: (err as Error).message })
			);
			reject(job.signal.reason);
		};
		job.signal.addEventListener("abort", onAbort, { once: true });
		answer.then(resolve, reject).finally(() => job.signal.removeEventListener("abort", onAbort));
	});
	// Stopped by someone else (an operator's llm.cancel): the answer is partial, so the step is not done.
	if (result.finishReason === "cancelled")
		throw new UpstreamError("The model's answer was stopped before its end", undefined, { generationId: result.generationId });
	return result.content;
}

export function getConversation(job: JobContext<unknown>, id: string): Promise<ConversationView> {
	return job.ctx.call<ConversationView, { id: string }>("conversation.get", { id });
}

/** A page of the owner's conversations, most recently active first. */
export function conversationsPage(job: JobContext<unknown>, cursor: string | null): Promise<Page<ConversationView>> {
	return job.ctx.call<Page<ConversationView>, { limit: number; cursor?: string }>("conversation.list", { limit: PAGE_SIZE, cursor: cursor ?? undefined });
}

/** A page of a conversation's messages, newest first; the conversation must be the owner's (else NOT_FOUND). */
export function messagesPage(job: JobContext<unknown>, id: string, cursor: string | null): Promise<Page<MessageView>> {
	return job.ctx.call<Page<MessageView>, { id: string; limit: number; cursor?: string }>("conversation.messages", {
		id,
		limit: PAGE_SIZE,
		cursor: cursor ?? undefined
	});
}

/** Every page of a conversation's messages, oldest first (for conversations read within one step). */
export async function allMessages(job: JobContext<unknown>, id: string, maxMessages = Number.POSITIVE_INFINITY): Promise<MessageView[]> {
	const newestFirst: MessageView[] = [];
	let cursor: string | null = null;
	do {
		const page: Page<MessageView> = await messagesPage(job, id, cursor);
		newestFirst.push(...page.items);
		cursor = page.nextCursor;
	} while (cursor && newestFirst.length < maxMessages);
	return newestFirst.reverse();
}
