/**
 * Text for a streamed HTTP response (SSE), gathered over one tick and written as one chunk. The
 * events of one read (a generation log read, a batch of model lines) then cost one write, one
 * chunk header and at most one packet, instead of one of each per event.
 */
import type { ServerResponse } from "node:http";

export class TickWriter {
	private pending = "";

	constructor(private readonly res: ServerResponse) {}

	write(text: string): void {
		if (!this.pending) process.nextTick(this.flush);
		this.pending += text;
	}

	/** At the end of the tick: writes what gathered. */
	private readonly flush = (): void => {
		if (!this.pending) return;
		const text = this.pending;
		this.pending = "";
		if (!this.res.writableEnded) this.res.write(text);
	};

	/** Ends the response after what is pending. */
	end(last = ""): void {
		const text = this.pending + last;
		this.pending = "";
		this.res.end(text);
	}
}
