/**
 * For callers of `llm.stream` on any node. Moleculer tells the producing node nothing when a
 * remote consumer destroys its copy of a response stream: the generation would go on, for no
 * one. `callLlmStream` closes that gap by broadcasting `generation.cancel` when the stream is
 * destroyed before its end. (On the producing node itself, destroying the stream stops the
 * generation directly.)
 */
import type { Readable } from "node:stream";
import type { CallingOptions } from "moleculer";
import { withNodeFailover } from "../../lib/node-loss";
import type { CancelParams, StreamParams } from "./params";

/** The broadcast event that stops a generation on whichever node produces it. */
export const CANCEL_EVENT = "generation.cancel";

/** A broker or a context: whatever can call actions and broadcast events. */
export interface LlmCaller {
	call<TResult, TParams>(action: string, params: TParams, opts?: CallingOptions): Promise<TResult>;
	broadcast<TData>(event: string, data: TData): Promise<void> | void;
}

/** A call that lands on a node that dies or stops before its first token goes to another node. */
export const LLM_FAILOVER = { attempts: 3, backoffMs: 250 } as const;

/**
 * Calls `llm.stream` (with no call timeout by default: the llm node bounds the wait for the
 * first token itself) and returns its NDJSON stream; read it with `readLineBatches` from ./ndjson.
 */
export function callLlmStream(caller: LlmCaller, params: StreamParams, opts: CallingOptions = {}): Promise<Readable> {
	return callCancellableStream(caller, "llm.stream", params, opts);
}

/**
 * Calls any action that answers with the stream of a generation named by `params.generationId`
 * (`llm.stream`, `conversation.complete`); destroying the stream before its end broadcasts the cancel.
 * Both resolve at the first token, so a call refused because its node was lost has produced
 * nothing and is made again on a live node.
 */
export async function callCancellableStream<P extends { generationId: string }>(
	caller: LlmCaller,
	action: string,
	params: P,
	opts: CallingOptions = {}
): Promise<Readable> {
	// retries: 0, as this loop already makes the call again on a live node.
	const stream = await withNodeFailover(() => caller.call<Readable, P>(action, params, { timeout: 0, ...opts, retries: 0 }), LLM_FAILOVER);
	stream.once("close", () => {
		if (stream.readableEnded) return;
		Promise.resolve(caller.broadcast<CancelParams>(CANCEL_EVENT, { generationId: params.generationId })).catch(() => {
			// Best effort: a node that cannot broadcast is leaving the cluster anyway.
		});
	});
	return stream;
}
