/**
 * The stream `llm.stream` returns: one JSON `LlmStreamLine` per line. Lines produced in the same
 * turn of the event loop are pushed together at its end (setImmediate): Moleculer sends each
 * chunk of a stream as its own packet, so tokens that arrive together (a busy node, a provider
 * that sends several per read) share one packet, while a lone token waits for nothing but the
 * rest of the current turn. A consumer splits on "\n": `readLineBatches` does that, handing over
 * a chunk's lines at once.
 */
import { Readable } from "node:stream";
import { StringDecoder } from "node:string_decoder";
import type { LlmStreamLine } from "../../lib/chat-protocol";

/**
 * The streams of this process with lines waiting, pushed together by one setImmediate: their
 * packets are then published in one synchronous run, which the NATS client sends with one socket
 * write (it flushes once per microtask checkpoint), instead of one write per stream.
 */
const waiting = new Set<LineStream>();
let flushScheduled = false;

function flushWaiting(): void {
	flushScheduled = false;
	for (const stream of waiting) stream.flush(); // each flush takes its stream out of the set
}

export class LineStream extends Readable {
	private ended = false;
	/** Lines sent in this turn of the event loop, not pushed yet. */
	private pending = "";

	/**
	 * `onConsumerGone` runs when the reading side destroys the stream before its last line. Object
	 * mode, so that chunks stay strings: Moleculer's JSON serializer sends a Buffer chunk as an
	 * array of byte values (`{"type":"Buffer","data":[123,34,…]}`), about four times the bytes and
	 * a number per byte to parse; a string goes as a JSON string, and the calling node's copy of
	 * the stream is in object mode too.
	 */
	constructor(private readonly onConsumerGone: () => void) {
		super({ objectMode: true });
	}

	override _read(): void {
		// Lines are pushed as the model produces them; nothing to pull.
	}

	/** Queues one line for the end of this turn, unless the stream is already ended or destroyed. */
	send(line: LlmStreamLine): void {
		if (this.ended || this.destroyed) return;
		this.pending += `${JSON.stringify(line)}\n`;
		waiting.add(this);
		if (!flushScheduled) {
			flushScheduled = true;
			setImmediate(flushWaiting);
		}
	}

	/** Pushes the end of the stream after the lines sent so far. */
	finish(): void {
		if (this.ended || this.destroyed) return;
		this.ended = true;
		this.flush();
		this.push(null);
	}

	/** Pushes the lines sent so far as one chunk. */
	flush(): void {
		waiting.delete(this);
		if (!this.pending || this.destroyed) return;
		const lines = this.pending;
		this.pending = "";
		this.push(lines);
	}

	override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
		if (!this.ended) this.onConsumerGone();
		callback(error);
	}

	/** Resolves once the reader took the last line (or went away), at most after `timeoutMs`. */
	drained(timeoutMs: number): Promise<void> {
		if (this.readableEnded || this.destroyed) return Promise.resolve();
		return new Promise(resolve => {
			const done = () => {
				clearTimeout(timer);
				this.off("end", done);
				this.off("close", done);
				resolve();
			};
			const timer = setTimeout(done, timeoutMs);
			this.once("end", done);
			this.once("close", done);
		});
	}
}

/** Splits NDJSON bytes into parsed lines, across chunk boundaries. */
export class LineSplitter {
	private readonly decoder = new StringDecoder("utf8");
	private buffered = "";

	/** The complete lines this chunk finished. */
	push(chunk: Buffer | string): LlmStreamLine[] {
		this.buffered += typeof chunk === "string" ? chunk : this.decoder.write(chunk);
		const lines: LlmStreamLine[] = [];
		let start = 0;
		let newline = this.buffered.indexOf("\n");
		while (newline >= 0) {
			if (newline > start) lines.push(JSON.parse(this.buffered.slice(start, newline)) as LlmStreamLine);
			start = newline + 1;
			newline = this.buffered.indexOf("\n", start);
		}
		this.buffered = this.buffered.slice(start);
		return lines;
	}

	/** A last line without its newline, if any. */
	end(): LlmStreamLine[] {
		const rest = (this.buffered + this.decoder.end()).trim();
		this.buffered = "";
		return rest ? [JSON.parse(rest) as LlmStreamLine] : [];
	}
}

export interface ReadOptions {
	/**
	 * Longest silence between chunks before the stream counts as lost (a link or node that died
	 * without closing it): the stream is destroyed and the read rejects. Unset: no bound.
	 */
	idleMs?: number;
}

/**
 * Reads an `llm.stream` response, handing over the lines of each chunk together as it arrives
 * (a consumer can write them out in one go). Resolves at the stream's end; rejects when it errors,
 * is destroyed before its end, stays silent longer than `idleMs`, or a line is not JSON. A
 * throwing `onLines` destroys the stream.
 */
export function readLineBatches(stream: Readable, onLines: (lines: LlmStreamLine[]) => void, opts: ReadOptions = {}): Promise<void> {
	return new Promise((resolve, reject) => {
		if (stream.destroyed) return reject(new Error("The stream was closed before its end"));
		const splitter = new LineSplitter();
		let settled = false;
		// One timer for the whole read, pushed back by refresh() on every chunk (no timer per chunk).
		const idle = opts.idleMs ? setTimeout(() => fail(new Error(`The stream sent nothing for ${opts.idleMs} ms`)), opts.idleMs) : undefined;
		const fail = (err: Error) => {
			if (settled) return;
			settled = true;
			clearTimeout(idle);
			stream.destroy();
			reject(err);
		};
		const deliver = (read: () => LlmStreamLine[]) => {
			try {
				const lines = read();
				if (lines.length > 0) onLines(lines);
				return true;
			} catch (err) {
				fail(err as Error);
				return false;
			}
		};
		stream.on("data", (chunk: Buffer | string) => {
			if (settled) return;
			idle?.refresh();
			deliver(() => splitter.push(chunk));
		});
		stream.once("end", () => {
			if (settled || !deliver(() => splitter.end())) return;
			settled = true;
			clearTimeout(idle);
			resolve();
		});
		stream.once("error", fail);
		stream.once("close", () => fail(new Error("The stream was closed before its end")));
	});
}
