import { PassThrough, Readable } from "node:stream";
import { setImmediate as nextTurn } from "node:timers/promises";
import { describe, expect, it, vi } from "vitest";
import type { LlmStreamLine } from "../../lib/chat-protocol";
import { LineSplitter, LineStream, readLineBatches } from "../../services/llm/ndjson";

// The NDJSON stream of `llm.stream`: LineStream (the producer, one chunk per event-loop turn) and
// readLineBatches with its LineSplitter (the consumer), over real node streams.

const delta = (content: string): LlmStreamLine => ({ type: "delta", content });
const ndjson = (...lines: LlmStreamLine[]) => lines.map(l => `${JSON.stringify(l)}\n`).join("");

/** Reads a stream to its end, keeping each batch as handed over. */
async function batchesOf(stream: Readable): Promise<LlmStreamLine[][]> {
	const batches: LlmStreamLine[][] = [];
	await readLineBatches(stream, lines => batches.push(lines));
	return batches;
}

describe("LineSplitter", () => {
	it("joins a line split across chunks, and hands over several lines of one chunk together", () => {
		const splitter = new LineSplitter();
		const text = ndjson(delta("one"), delta("two"), delta("three"));
		const cut = text.indexOf("two") + 1;
		expect(splitter.push(text.slice(0, 5))).toEqual([]);
		expect(splitter.push(text.slice(5, cut))).toEqual([delta("one")]);
		expect(splitter.push(text.slice(cut))).toEqual([delta("two"), delta("three")]);
		expect(splitter.end()).toEqual([]);
	});

	it("decodes a UTF-8 character split between two Buffers", () => {
		const splitter = new LineSplitter();
		const bytes = Buffer.from(ndjson(delta("héllo 你好")));
		const inside = bytes.indexOf(Buffer.from("你")) + 1;
		expect(splitter.push(bytes.subarray(0, inside))).toEqual([]);
		expect(splitter.push(bytes.subarray(inside))).toEqual([delta("héllo 你好")]);
	});

	it("skips empty lines and keeps a last line that has no newline for the end", () => {
		const splitter = new LineSplitter();
		expect(splitter.push(`\n\n${JSON.stringify(delta("a"))}\n\n${JSON.stringify(delta("b"))}`)).toEqual([delta("a")]);
		expect(splitter.end()).toEqual([delta("b")]);
		expect(splitter.end()).toEqual([]);
	});

	it("throws on a line that is not JSON", () => {
		expect(() => new LineSplitter().push("{not json}\n")).toThrow(SyntaxError);
	});
});

describe("readLineBatches", () => {
	it("hands over the lines of each chunk as one batch, across chunk boundaries, and resolves at the end", async () => {
		const text = ndjson(delta("a"), delta("b"), delta("c"), delta("d"));
		const cut = text.indexOf('"c"');
		const batches = await batchesOf(Readable.from([text.slice(0, cut), text.slice(cut)]));
		expect(batches).toEqual([
			[delta("a"), delta("b")],
			[delta("c"), delta("d")]
		]);
	});

	it("rejects when the stream is destroyed before its end (a broken stream), with the lines so far delivered", async () => {
		const stream = new PassThrough();
		const lines: LlmStreamLine[] = [];
		const reading = readLineBatches(stream, batch => lines.push(...batch));
		stream.write(ndjson(delta("a")));
		await vi.waitFor(() => expect(lines).toEqual([delta("a")]));
		stream.destroy();
		await expect(reading).rejects.toThrow("The stream was closed before its end");
	});

	it("rejects with the stream's own error", async () => {
		const stream = new PassThrough();
		const reading = readLineBatches(stream, () => {});
		stream.destroy(new Error("Stream closed by llm-2"));
		await expect(reading).rejects.toThrow("Stream closed by llm-2");
	});

	it("rejects a stream that is already destroyed", async () => {
		const stream = new PassThrough();
		stream.destroy();
		await expect(readLineBatches(stream, () => {})).rejects.toThrow(/closed before its end/);
	});

	it("rejects on a line that is not JSON and destroys the stream", async () => {
		const stream = new PassThrough();
		const reading = readLineBatches(stream, () => {});
		stream.write("{oops\n");
		await expect(reading).rejects.toThrow(SyntaxError);
		expect(stream.destroyed).toBe(true);
	});

	it("destroys the stream and rejects when the consumer throws", async () => {
		const stream = new PassThrough();
		const reading = readLineBatches(stream, () => {
			throw new Error("consumer gone");
		});
		stream.write(ndjson(delta("a")));
		await expect(reading).rejects.toThrow("consumer gone");
		expect(stream.destroyed).toBe(true);
	});

	it("delivers a last line without its newline at the end", async () => {
		expect(await batchesOf(Readable.from([JSON.stringify(delta("tail"))]))).toEqual([[delta("tail")]]);
	});
});

/** A stream with one line sent and its end pushed, not read yet. */
function finishedStream(onConsumerGone = () => {}): LineStream {
	const stream = new LineStream(onConsumerGone);
	stream.send(delta("a"));
	stream.finish();
	return stream;
}

/** Tells whether a promise has settled yet. */
function watch(promise: Promise<void>) {
	const state = { settled: false, promise };
	state.promise = promise.then(() => {
		state.settled = true;
	});
	return state;
}

describe("LineStream", () => {
	it("pushes the lines sent in one turn of the event loop as one chunk, and those of the next turn as another", async () => {
		const stream = new LineStream(() => {});
		const chunks: string[] = [];
		stream.on("data", (chunk: string) => chunks.push(chunk));
		stream.send(delta("a"));
		stream.send(delta("b"));
		expect(chunks).toEqual([]);
		await nextTurn();
		expect(chunks).toEqual([ndjson(delta("a"), delta("b"))]);
		stream.send(delta("c"));
		await nextTurn();
		expect(chunks).toEqual([ndjson(delta("a"), delta("b")), ndjson(delta("c"))]);
	});

	it("batches lines of several streams in the same turn, each in its own stream", async () => {
		const a = new LineStream(() => {});
		const b = new LineStream(() => {});
		const got = { a: [] as string[], b: [] as string[] };
		a.on("data", (c: string) => got.a.push(c));
		b.on("data", (c: string) => got.b.push(c));
		a.send(delta("a1"));
		b.send(delta("b1"));
		a.send(delta("a2"));
		await nextTurn();
		expect(got).toEqual({ a: [ndjson(delta("a1"), delta("a2"))], b: [ndjson(delta("b1"))] });
	});

	it("finish pushes what is pending then the end, and nothing sent after it goes out", async () => {
		const stream = finishedStream();
		stream.send(delta("late"));
		expect(await batchesOf(stream)).toEqual([[delta("a")]]);
	});

	it("tells its producer when the consumer destroys it before the end, and not after a normal end", async () => {
		const gone = vi.fn();
		const dropped = new LineStream(gone);
		dropped.send(delta("a"));
		dropped.destroy();
		expect(gone).toHaveBeenCalledTimes(1);

		const finishedGone = vi.fn();
		const finished = finishedStream(finishedGone);
		await batchesOf(finished);
		finished.destroy();
		expect(finishedGone).not.toHaveBeenCalled();
	});

	it("drained resolves once the reader has taken the last line, and at the timeout when nobody reads", async () => {
		const read = finishedStream();
		const readDrained = watch(read.drained(60_000));
		await nextTurn();
		expect(readDrained.settled).toBe(false);
		read.resume();
		await readDrained.promise;
		expect(read.readableEnded).toBe(true);

		vi.useFakeTimers();
		try {
			const unread = finishedStream();
			const unreadDrained = watch(unread.drained(5000));
			await vi.advanceTimersByTimeAsync(4999);
			expect(unreadDrained.settled).toBe(false);
			await vi.advanceTimersByTimeAsync(1);
			expect(unreadDrained.settled).toBe(true);
			expect(unread.readableEnded).toBe(false);
		} finally {
			vi.useRealTimers();
		}
	});
});
