/**
 * Small HTTP helpers for the simulator: OpenAI-shaped error bodies, JSON answers and bounded
 * body reading, all recording the status in the request's log entry.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { SimulatorRequestLogEntry } from "./log";

interface OpenAIErrorBody {
	error: { message: string; type: string; param: string | null; code: string | null };
}

/** One request being served. `entry` is its log entry (null for /_simulator/* routes). */
export interface RequestContext {
	req: IncomingMessage;
	res: ServerResponse;
	requestId: string;
	entry: SimulatorRequestLogEntry | null;
}

/** The error `type` OpenAI uses for a status. */
function errorTypeFor(status: number): string {
	if (status === 401) return "invalid_request_error";
	if (status === 403) return "permission_error";
	if (status === 429) return "rate_limit_exceeded";
	if (status >= 500) return "server_error";
	return "invalid_request_error";
}

function errorBody(status: number, message: string, param: string | null = null, code: string | null = null): OpenAIErrorBody {
	return { error: { message, type: errorTypeFor(status), param, code } };
}

/** True once the client is gone or the response is complete: nothing more may be written. */
export function isClosed(res: ServerResponse): boolean {
	return res.destroyed || res.writableEnded;
}

export function sendJson(ctx: RequestContext, status: number, body: unknown, headers: Record<string, string> = {}): void {
	const { res } = ctx;
	if (isClosed(res) || res.headersSent) return;
	const payload = JSON.stringify(body);
	if (ctx.entry) ctx.entry.status = status;
	res.writeHead(status, {
		"content-type": "application/json",
		"content-length": Buffer.byteLength(payload),
		"x-request-id": ctx.requestId,
		...headers
	});
	res.end(payload);
}

export function sendError(ctx: RequestContext, status: number, message: string, param: string | null = null, code: string | null = null): void {
	sendJson(ctx, status, errorBody(status, message, param, code));
}

/** Thrown by readBody; `status` is the HTTP status to answer with (when the client is still there). */
export class BodyError extends Error {
	constructor(
		readonly status: number,
		message: string
	) {
		super(message);
		this.name = "BodyError";
	}
}

/** Reads the whole request body, rejecting past `limit` bytes or when the client goes away. */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
	return new Promise((resolve, reject) => {
		const chunks: Buffer[] = [];
		let size = 0;
		let done = false;
		const finish = (error: Error | null) => {
			if (done) return;
			done = true;
			req.off("data", onData);
			req.off("end", onEnd);
			req.off("error", onError);
			req.off("close", onClose);
			if (error) reject(error);
			else resolve(Buffer.concat(chunks, size));
		};
		const onData = (chunk: Buffer) => {
			size += chunk.length;
			if (size > limit) {
				finish(new BodyError(413, `Request body exceeds ${limit} bytes`));
				req.resume();
				return;
			}
			chunks.push(chunk);
		};
		const onEnd = () => finish(null);
		const onError = (error: Error) => finish(new BodyError(400, `Could not read request body: ${error.message}`));
		const onClose = () => finish(new BodyError(499, "Client closed the request"));
		req.on("data", onData);
		req.on("end", onEnd);
		req.on("error", onError);
		req.on("close", onClose);
	});
}
