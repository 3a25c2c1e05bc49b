/**
 * How a generation reaches clients: the same log events become socket.io events or SSE frames.
 * Every client reads through the node's one generation log reader, from any sequence number, so
 * a client that reconnects to any gateway resumes with no gap and no duplicate.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { ERR_STREAM_UNAVAILABLE } from "../../lib/errors";
import type { GenerationLog } from "../../lib/generations/log";
import type { GenerationEvent } from "../../lib/chat-protocol";
import { TickWriter } from "./tick-writer";

/** The client-facing name and payload of a log event (socket.io event name; SSE `type`). */
export function clientEvent(generationId: string, e: GenerationEvent): { name: string; payload: Record<string, unknown> } {
	switch (e.type) {
		case "chunk":
			return { name: "generation:chunk", payload: { generationId, seq: e.seq, delta: e.delta } };
		case "tool:start":
			return { name: "tool:start", payload: { generationId, seq: e.seq, calls: e.calls } };
		case "tool:result":
			return { name: "tool:result", payload: { generationId, seq: e.seq, results: e.results } };
		case "done":
			return {
				name: "generation:done",
				payload: { generationId, seq: e.seq, messageId: e.messageId, status: e.status, usage: e.usage, finishReason: e.finishReason }
			};
		case "error":
			return {
				name: "generation:error",
				payload: { generationId, seq: e.seq, messageId: e.messageId, status: e.status, code: e.code, message: e.message }
			};
	}
}

const SSE_HEARTBEAT_MS = 15_000;

export interface SseResponse {
	/** Frames written once per event-loop turn (see tick-writer.ts). */
	out: TickWriter;
	/** Stops the heartbeat and the response's tracking for shutdown; once. */
	close(): void;
}

/**
 * Opens an SSE response: its headers (unbuffered through proxies), a first comment, a heartbeat,
 * and its place in `open` (the streams a stopping node ends).
 */
export function openSse(res: ServerResponse, headers: Record<string, string>, open?: Set<ServerResponse>): SseResponse {
	open?.add(res);
	res.socket?.setNoDelay(true);
	res.writeHead(200, {
		...headers,
		"Content-Type": "text/event-stream; charset=utf-8",
		"Cache-Control": "no-cache, no-transform",
		Connection: "keep-alive",
		"X-Accel-Buffering": "no"
	});
	const out = new TickWriter(res);
	out.write(": stream open\n\n");
	const heartbeat = setInterval(() => out.write(": ping\n\n"), SSE_HEARTBEAT_MS);
	let closed = false;
	return {
		out,
		close() {
			if (closed) return;
			closed = true;
			clearInterval(heartbeat);
			open?.delete(res);
		}
	};
}

/** Streams a generation to an HTTP client as SSE: `id:` is the sequence number, `data:` a JSON object, last `data: [DONE]`. */
export function streamGenerationSse(
	log: GenerationLog,
	generationId: string,
	afterSeq: number,
	req: IncomingMessage,
	res: ServerResponse,
	headers: Record<string, string> = {},
	open?: Set<ServerResponse>
): Promise<void> {
	return new Promise(resolve => {
		const { out, close } = openSse(res, headers, open);
		let finished = false;
		const finish = () => {
			if (finished) return;
			finished = true;
			close();
			unsubscribe();
			resolve();
		};
		const unsubscribe = log.subscribe(
			generationId,
			afterSeq,
			e => {
				const { name, payload } = clientEvent(generationId, e);
				// The log hands over the events of one read together: they leave in one write.
				out.write(`id: ${e.seq}\ndata: ${JSON.stringify({ type: name, ...payload })}\n\n`);
			},
			() => {
				out.end("data: [DONE]\n\n");
				finish();
			},
			err => {
				out.end(`data: ${JSON.stringify({ type: "generation:error", generationId, code: ERR_STREAM_UNAVAILABLE, message: err.message })}\n\n`);
				finish();
			}
		);
		// The client went away: stop reading for it. The generation itself goes on.
		req.on("close", finish);
		res.on("close", finish);
	});
}

/** Ends open SSE streams when the node stops; their clients reconnect with Last-Event-ID. */
export function endStreamsForShutdown(open: Set<ServerResponse>): void {
	for (const res of open) res.end(": server stopping; reconnect with Last-Event-ID to resume\n\n");
	open.clear();
}

/** `Last-Event-ID` (or `?after=`) as a sequence number; undefined when absent, null when malformed. */
export function parseAfter(value: unknown): number | undefined | null {
	if (value === undefined || value === null || value === "") return undefined;
	const text = Array.isArray(value) ? String(value[0]) : String(value);
	if (!/^\d{1,15}$/.test(text)) return null;
	return Number(text);
}
