/**
 * The byte stream `llm.stream` returns: one JSON `LlmStreamLine` per line, each pushed the
 * moment it exists. Moleculer sends each chunk as its own packet to the calling node, so lines
 * arrive as they are produced; a consumer must still split on "\n" (Moleculer cuts chunks over
 * 256 KiB, and a local consumer may read several lines at once). `readLines` does that.
 */
import { Readable } from "node:stream";
import { StringDecoder } from "node:string_decoder";
import type { LlmStreamLine } from "../../lib/generations/types";

export class LineStream extends Readable {
	private ended = false;

	/** `onConsumerGone` runs when the reading side destroys the stream before its last line. */
	constructor(private readonly onConsumerGone: () => void) {
		super();
	}

	override _read(): void {
		// Lines are pushed as the model produces them; nothing to pull.
	}

	/** Pushes one line, unless the stream is already ended or destroyed. */
	send(line: LlmStreamLine): void {
		if (this.ended || this.destroyed) return;
		this.push(`${JSON.stringify(line)}\n`);
	}

	/** Pushes the end of the stream after the lines sent so far. */
	finish(): void {
		if (this.ended || this.destroyed) return;
		this.ended = true;
		this.push(null);
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

/** Parses an `llm.stream` response into its lines, in order. Throws when the stream breaks. */
export async function* readLines(stream: Readable): AsyncGenerator<LlmStreamLine> {
	const decoder = new StringDecoder("utf8");
	let buffered = "";
	for await (const chunk of stream as AsyncIterable<Buffer | string>) {
		buffered += typeof chunk === "string" ? chunk : decoder.write(chunk);
		let newline = buffered.indexOf("\n");
		while (newline >= 0) {
			const raw = buffered.slice(0, newline);
			buffered = buffered.slice(newline + 1);
			if (raw.trim()) yield JSON.parse(raw) as LlmStreamLine;
			newline = buffered.indexOf("\n");
		}
	}
	buffered += decoder.end();
	if (buffered.trim()) yield JSON.parse(buffered) as LlmStreamLine;
}
