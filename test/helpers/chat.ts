/**
 * Chat clients for tests: a socket.io client that collects a generation's events, and SSE readers
 * over fetch that parse `id:`/`data:` frames as a browser's EventSource would (the one parser every
 * test uses: frame by frame as they arrive, or all of a stream at once).
 */
import { io as connect, type Socket } from "socket.io-client";

export interface ChunkEvent {
	generationId: string;
	seq: number;
	delta: string;
}

export interface GenerationEnd {
	name: "generation:done" | "generation:error";
	payload: {
		generationId: string;
		seq: number;
		messageId: string;
		status: string;
		code?: string;
		message?: string;
		usage?: { promptTokens: number; completionTokens: number };
	};
}

export function openSocket(baseUrl: string, token: string): Promise<Socket> {
	const socket = connect(baseUrl, { auth: { token }, transports: ["websocket"], reconnection: false });
	return new Promise((resolve, reject) => {
		socket.once("connect", () => resolve(socket));
		socket.once("connect_error", reject);
	});
}

/** Collects one generation's chunks on a socket until its final event. */
export function collectGeneration(socket: Socket, generationId: string, opts: { stopAfterChunks?: number } = {}) {
	const chunks: ChunkEvent[] = [];
	let onEnd: ((end: GenerationEnd) => void) | undefined;
	let onEnough: (() => void) | undefined;
	const ended = new Promise<GenerationEnd>(resolve => (onEnd = resolve));
	const enough = new Promise<void>(resolve => (onEnough = resolve));
	const onChunk = (c: ChunkEvent) => {
		if (c.generationId !== generationId) return;
		chunks.push(c);
		if (opts.stopAfterChunks !== undefined && chunks.length >= opts.stopAfterChunks) onEnough?.();
	};
	const onDone = (payload: GenerationEnd["payload"]) => payload.generationId === generationId && onEnd?.({ name: "generation:done", payload });
	const onError = (payload: GenerationEnd["payload"]) => payload.generationId === generationId && onEnd?.({ name: "generation:error", payload });
	socket.on("generation:chunk", onChunk);
	socket.on("generation:done", onDone);
	socket.on("generation:error", onError);
	return {
		chunks,
		ended,
		enough,
		text: () => chunks.map(c => c.delta).join(""),
		stop() {
			socket.off("generation:chunk", onChunk);
			socket.off("generation:done", onDone);
			socket.off("generation:error", onError);
		}
	};
}

/** Collects chunk events for every generation a socket sees (to prove no cross-talk). */
export function recordAll(socket: Socket): ChunkEvent[] {
	const all: ChunkEvent[] = [];
	socket.on("generation:chunk", (c: ChunkEvent) => all.push(c));
	return all;
}

export interface SseFrame {
	id?: string;
	data: string;
}

/**
 * Hands each SSE frame to onFrame as it arrives, as a browser's EventSource would parse it: `id:`
 * and the `data:` lines joined; comments and heartbeats (no data) are skipped. Resolves when the
 * stream ends or onFrame returns "stop" (anything else goes on); rejects when the stream breaks.
 */
export async function eachSseFrame(res: Response, onFrame: (frame: SseFrame) => unknown): Promise<void> {
	if (!res.body) return;
	const reader = res.body.getReader();
	const decoder = new TextDecoder();
	let buffer = "";
	for (;;) {
		const { done, value } = await reader.read();
		if (done) return;
		buffer += decoder.decode(value, { stream: true });
		for (let cut = buffer.indexOf("\n\n"); cut >= 0; cut = buffer.indexOf("\n\n")) {
			const block = buffer.slice(0, cut);
			buffer = buffer.slice(cut + 2);
			const frame: SseFrame = { data: "" };
			let hasData = false;
			for (const line of block.split("\n")) {
				if (line.startsWith("id:")) frame.id = line.slice(3).trim();
				else if (line.startsWith("data:")) {
					frame.data += (hasData ? "\n" : "") + line.slice(5).trimStart();
					hasData = true;
				}
			}
			if (hasData && onFrame(frame) === "stop") return;
		}
	}
}

/** eachSseFrame for callers that want only each frame's non-empty data (`[DONE]` included). */
export function eachSseData(res: Response, onData: (data: string) => unknown): Promise<void> {
	return eachSseFrame(res, frame => (frame.data === "" ? undefined : onData(frame.data)));
}

/** Reads an SSE response into frames; stops at `data: [DONE]` or after `maxFrames` (then aborts). */
export async function readSse(res: Response, opts: { maxFrames?: number; abort?: AbortController } = {}): Promise<SseFrame[]> {
	const frames: SseFrame[] = [];
	try {
		await eachSseFrame(res, frame => {
			frames.push(frame);
			if (frame.data === "[DONE]") return "stop";
			if (opts.maxFrames !== undefined && frames.length >= opts.maxFrames) {
				opts.abort?.abort();
				return "stop";
			}
		});
	} catch (err) {
		if (!opts.abort?.signal.aborted) throw err;
	}
	return frames;
}

export { sleep } from "./wait";
