/**
 * The four ways one stream is driven and timed: OpenAI-wire SSE straight to the simulator or to
 * chatmesh's `/v1` (node:http with keep-alive), a chat turn over socket.io, and a chat turn over
 * SSE. Each resolves (never rejects) with the time to the first content chunk, the gaps between
 * chunks and how many arrived; timestamps are taken when the bytes (or the event) arrive.
 */
import http from "node:http";
import { io, type Socket } from "socket.io-client";

export interface StreamResult {
	ok: boolean;
	error?: string;
	/** Request sent → first content chunk, ms. */
	ttftMs: number;
	/** Between consecutive content chunks, ms. */
	gapsMs: number[];
	chunks: number;
	/** Request sent → end of stream, ms. */
	totalMs: number;
}

const STREAM_TIMEOUT_MS = 30_000;
const PROMPT = "Describe the history of tea in a few sentences.";

const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: 1024 });

class Timing {
	readonly start = performance.now();
	first = Number.NaN;
	last = Number.NaN;
	chunks = 0;
	readonly gaps: number[] = [];
	chunk(at: number): void {
		if (this.chunks === 0) this.first = at;
		else this.gaps.push(at - this.last);
		this.last = at;
		this.chunks += 1;
	}
	result(ok: boolean, error?: string): StreamResult {
		return { ok, error, ttftMs: this.first - this.start, gapsMs: this.gaps, chunks: this.chunks, totalMs: performance.now() - this.start };
	}
}

/** What a `data:` payload means to the caller: a content chunk, the end, an error, or nothing. */
type FrameKind = "chunk" | "end" | "error" | "other";

/** POSTs a JSON body and reads the SSE answer frame by frame. */
function sseRequest(url: string, headers: Record<string, string>, body: string, classify: (data: string) => FrameKind): Promise<StreamResult> {
	const timing = new Timing();
	return new Promise(resolve => {
		let settled = false;
		const finish = (ok: boolean, error?: string) => {
			if (settled) return;
			settled = true;
			clearTimeout(timer);
			resolve(timing.result(ok, error));
		};
		const req = http.request(url, {
			method: "POST",
			agent,
			headers: { "content-type": "application/json", accept: "text/event-stream", "content-length": Buffer.byteLength(body), ...headers }
		});
		const timer = setTimeout(() => {
			finish(false, "timeout");
			req.destroy();
		}, STREAM_TIMEOUT_MS);
		req.on("error", err => finish(false, err.message));
		req.on("response", res => {
			if (res.statusCode !== 200) {
				let text = "";
				res.on("data", (c: Buffer) => (text += c.toString()));
				res.on("end", () => finish(false, `HTTP ${res.statusCode} ${text.slice(0, 200)}`));
				return;
			}
			let buffer = "";
			let ended = false;
			let failed: string | undefined;
			res.setEncoding("utf8");
			res.on("data", (text: string) => {
				const at = performance.now();
				buffer += text;
				for (let cut = buffer.indexOf("\n\n"); cut >= 0; cut = buffer.indexOf("\n\n")) {
					const block = buffer.slice(0, cut);
					buffer = buffer.slice(cut + 2);
					for (const line of block.split("\n")) {
						if (!line.startsWith("data:")) continue;
						const data = line.slice(5).trim();
						const kind = classify(data);
						if (kind === "chunk") timing.chunk(at);
						else if (kind === "end") ended = true;
						else if (kind === "error") failed ??= data.slice(0, 200);
					}
				}
			});
			res.on("end", () => (failed ? finish(false, failed) : finish(ended, ended ? undefined : "stream ended early")));
			res.on("error", err => finish(false, err.message));
		});
		req.end(body);
	});
}

/** OpenAI `chat.completion.chunk` frames: content deltas are chunks, `[DONE]` ends. */
function openAiFrame(data: string): FrameKind {
	if (data === "[DONE]") return "end";
	const frame = JSON.parse(data) as { error?: unknown; choices?: Array<{ delta?: { content?: string | null } }> };
	if (frame.error) return "error";
	return frame.choices?.[0]?.delta?.content ? "chunk" : "other";
}

/** An OpenAI-wire streamed completion: to the simulator (direct) or to chatmesh's /v1 (with an API key). */
export function openAiStream(baseUrl: string, apiKey?: string, model = "sim-small"): Promise<StreamResult> {
	const body = JSON.stringify({ model, stream: true, messages: [{ role: "user", content: PROMPT }] });
	return sseRequest(`${baseUrl}/v1/chat/completions`, apiKey ? { authorization: `Bearer ${apiKey}` } : {}, body, openAiFrame);
}

/** chatmesh's own SSE frames: `generation:chunk`, then `generation:done` or `generation:error`. */
function chatmeshFrame(data: string): FrameKind {
	if (data === "[DONE]") return "other";
	const type = (JSON.parse(data) as { type?: string }).type;
	if (type === "generation:chunk") return "chunk";
	if (type === "generation:done") return "end";
	if (type === "generation:error") return "error";
	return "other";
}

/** One chat turn over SSE: `POST /api/conversations/:id/messages` into an empty conversation. */
export async function sseTurn(baseUrl: string, token: string): Promise<StreamResult> {
	const created = await fetch(`${baseUrl}/api/conversations`, {
		method: "POST",
		headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
		body: "{}"
	}).catch((err: Error) => err);
	if (created instanceof Error || created.status !== 201) {
		const error = created instanceof Error ? created.message : `create conversation: HTTP ${created.status}`;
		return { ok: false, error, ttftMs: Number.NaN, gapsMs: [], chunks: 0, totalMs: 0 };
	}
	const { id } = (await created.json()) as { id: string };
	return sseRequest(`${baseUrl}/api/conversations/${id}/messages`, { authorization: `Bearer ${token}` }, JSON.stringify({ content: PROMPT }), chatmeshFrame);
}

/** A socket.io connection that runs one chat turn at a time. */
export class ChatSocket {
	private current?: { timing: Timing; generationId?: string; acked: boolean; end?: { ok: boolean; error?: string }; done: (r: StreamResult) => void };

	/** Whether an event of this generation belongs to the turn; the turn's first event names its generation. */
	private static claims(turn: { generationId?: string }, generationId: string): boolean {
		turn.generationId ??= generationId;
		return turn.generationId === generationId;
	}

	private constructor(readonly socket: Socket) {
		socket.on("generation:chunk", (e: { generationId: string }) => {
			const turn = this.current;
			// Chunks of this turn; before the ack arrives the id is not known yet, so the first event names it.
			if (turn && ChatSocket.claims(turn, e.generationId)) turn.timing.chunk(performance.now());
		});
		const onEnd = (ok: boolean) => (e: { generationId: string; code?: string; message?: string }) => {
			const turn = this.current;
			if (!turn || !ChatSocket.claims(turn, e.generationId)) return;
			turn.end = ok ? { ok } : { ok, error: `${e.code}: ${e.message}` };
			this.settle();
		};
		socket.on("generation:done", onEnd(true));
		socket.on("generation:error", onEnd(false));
		socket.on("disconnect", reason => {
			if (this.current) {
				this.current.end = { ok: false, error: `disconnected: ${reason}` };
				this.current.acked = true;
				this.settle();
			}
		});
	}

	static connect(baseUrl: string, token: string, timeoutMs = 20_000): Promise<ChatSocket> {
		const socket = io(baseUrl, { auth: { token }, transports: ["websocket"], reconnection: false, forceNew: true, timeout: timeoutMs });
		return new Promise((resolve, reject) => {
			socket.once("connect", () => resolve(new ChatSocket(socket)));
			socket.once("connect_error", err => {
				socket.close();
				reject(err);
			});
		});
	}

	private settle(): void {
		const turn = this.current;
		if (!turn?.end || !turn.acked) return;
		this.current = undefined;
		turn.done(turn.timing.result(turn.end.ok, turn.end.error));
	}

	/** `chat:send` (a new conversation) → `generation:chunk`… → `generation:done`. */
	turn(content = PROMPT): Promise<StreamResult> {
		if (this.current) throw new Error("one turn at a time per socket");
		return new Promise(resolve => {
			const timing = new Timing();
			const timer = setTimeout(() => {
				if (this.current?.timing !== timing) return;
				this.current = undefined;
				resolve(timing.result(false, "timeout"));
			}, STREAM_TIMEOUT_MS);
			this.current = {
				timing,
				acked: false,
				done: r => {
					clearTimeout(timer);
					resolve(r);
				}
			};
			this.socket.emit("chat:send", { content }, (ack: { generationId?: string; error?: { code: string; message: string } }) => {
				const turn = this.current;
				if (turn?.timing !== timing) return;
				turn.acked = true;
				if (ack.error) turn.end = { ok: false, error: `${ack.error.code}: ${ack.error.message}` };
				else if (turn.generationId && turn.generationId !== ack.generationId) turn.end = { ok: false, error: "events of another generation" };
				else turn.generationId = ack.generationId;
				this.settle();
			});
		});
	}

	close(): void {
		this.socket.close();
	}
}
