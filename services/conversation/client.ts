/**
 * For callers of `conversation.send` on any node (the gateway's REST, socket.io and /v1 paths).
 * A send that lands on a conversation node that dies or stops before answering is made again on
 * a live node, as the same turn: the caller picks the generation id, and the retry is answered
 * with the turn the lost node stored, if it stored one, instead of a second turn.
 */
import { randomUUID } from "node:crypto";
import type { CallingOptions } from "moleculer";
import { withNodeFailover } from "../../lib/node-loss";
import { LLM_FAILOVER } from "../llm/client";
import type { SendParams, SendResult } from "./conversation.service";

/** A broker or a context: whatever can call actions. */
export interface ActionCaller {
	call<TResult, TParams>(action: string, params: TParams, opts?: CallingOptions): Promise<TResult>;
}

/** What a client sent, as it sent it: `conversation.send` validates it. */
export type ClientSend = { [K in "conversationId" | "content" | "model"]?: unknown };

export function callSend(caller: ActionCaller, params: ClientSend, opts?: CallingOptions): Promise<SendResult> {
	const generationId = randomUUID();
	let attempt = 0;
	return withNodeFailover(() => {
		attempt += 1;
		const send: ClientSend & Pick<SendParams, "generationId" | "retry"> = { ...params, generationId, ...(attempt > 1 ? { retry: true } : {}) };
		// retries: 0, as this loop makes the send again itself, marked as the retry it is.
		return caller.call<SendResult, typeof send>("conversation.send", send, { ...opts, retries: 0 });
	}, LLM_FAILOVER);
}
