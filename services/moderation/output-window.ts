/**
 * Windows of a streamed answer for moderation: the turn feeds text deltas in and calls
 * `moderation.check` (direction "output") once per window, not once per token.
 *
 * Windows are `size` characters long and start every `size - overlap` characters, so consecutive
 * windows share `overlap` characters and any phrase of up to `overlap + 1` characters lies whole
 * inside at least one window, however the deltas split it. `finish()` returns the last, shorter
 * window (the unchecked tail, with the overlap before it for context).
 */

export interface OutputWindowOptions {
	/** Characters per window. */
	size?: number;
	/** Characters each window shares with the next. */
	overlap?: number;
}

export class OutputWindow {
	readonly size: number;
	readonly overlap: number;
	/** Text from the start of the next window on. */
	private buffer = "";
	/** How many leading characters of the buffer an emitted window already covered. */
	private covered = 0;
	private ended = false;

	constructor({ size = 200, overlap = 50 }: OutputWindowOptions = {}) {
		if (!Number.isInteger(size) || !Number.isInteger(overlap) || overlap < 0 || size <= overlap)
			throw new RangeError("OutputWindow needs whole numbers with 0 <= overlap < size");
		this.size = size;
		this.overlap = overlap;
	}

	/** Adds a delta; returns the windows it completed (none, one, or several for a large delta). */
	push(delta: string): string[] {
		if (this.ended) throw new Error("OutputWindow.push after finish()");
		this.buffer += delta;
		const windows: string[] = [];
		const stride = this.size - this.overlap;
		while (this.buffer.length >= this.size) {
			windows.push(this.buffer.slice(0, this.size));
			this.buffer = this.buffer.slice(stride);
			this.covered = this.overlap;
		}
		return windows;
	}

	/** The final window, when text arrived after the last full one; undefined when all was checked. */
	finish(): string | undefined {
		if (this.ended) return undefined;
		this.ended = true;
		const tail = this.buffer.length > this.covered ? this.buffer : undefined;
		this.buffer = "";
		return tail;
	}
}
