import { afterEach, describe, expect, it, vi } from "vitest";
import type { GenerationEvent } from "../../lib/chat-protocol";
import { GenerationNotFoundError, type GenerationLogOptions } from "../../lib/generations/log";
import { MemoryGenerationLog } from "../../lib/generations/memory-log";
import { Subscription } from "../../lib/generations/subscriber";

// The delivery both generation logs share (Subscription), on its own and through the memory log:
// replay then live, "after seq", the terminal event, and onEnd / onError at most once.

const chunk = (seq: number): GenerationEvent => ({ seq, type: "chunk", delta: `tok-${seq}` });
const done = (seq: number): GenerationEvent => ({ seq, type: "done", messageId: "m", status: "completed", usage: { promptTokens: 1, completionTokens: 1 } });
const chunks = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => chunk(from + i));
/** Lets every queued microtask (and those they queue) run. */
const settle = () => new Promise<void>(resolve => setImmediate(resolve));

function recorder(logger = { warn: vi.fn(), error: vi.fn() }) {
	const seen = { seqs: [] as number[], ends: 0, errors: [] as Error[], left: 0 };
	const callbacks = {
		onEvent: (e: GenerationEvent) => {
			seen.seqs.push(e.seq);
		},
		onEnd: () => {
			seen.ends += 1;
		},
		onError: (err: Error) => {
			seen.errors.push(err);
		}
	};
	const leave = () => {
		seen.left += 1;
	};
	return { seen, callbacks, logger, leave };
}

describe("Subscription", () => {
	it("holds live events back until the replay, then delivers both in order with no duplicate where they meet", async () => {
		const { seen, callbacks, leave } = recorder();
		const sub = new Subscription(2, callbacks, undefined, leave);
		// Live events arrive while the replay is being read: some of them are in the replay too.
		for (const e of chunks(5, 8)) sub.push(e);
		await settle();
		expect(seen.seqs).toEqual([]);
		sub.replayed(chunks(3, 6));
		expect(seen.seqs).toEqual([3, 4, 5, 6, 7, 8]);
		sub.push(chunk(8));
		sub.push(chunk(9));
		await settle();
		expect(seen.seqs).toEqual([3, 4, 5, 6, 7, 8, 9]);
		expect(seen.ends).toBe(0);
	});

	it("skips everything up to its after seq, and reads a bad one as from the start", () => {
		const after = recorder();
		new Subscription(4, after.callbacks).replayed(chunks(1, 6));
		expect(after.seen.seqs).toEqual([5, 6]);
		const bad = recorder();
		const sub = new Subscription(Number.NaN, bad.callbacks);
		expect(sub.after).toBe(0);
		sub.replayed(chunks(1, 2));
		expect(bad.seen.seqs).toEqual([1, 2]);
	});

	it("never calls back inside push: live events are delivered on a later microtask, several pushes together", async () => {
		const { seen, callbacks } = recorder();
		const sub = new Subscription(0, callbacks);
		sub.replayed([]);
		sub.push(chunk(1));
		sub.push(chunk(2));
		expect(seen.seqs).toEqual([]);
		await settle();
		expect(seen.seqs).toEqual([1, 2]);
	});

	it("ends once after the terminal event and delivers nothing after it", async () => {
		const { seen, callbacks, leave } = recorder();
		const sub = new Subscription(0, callbacks, undefined, leave);
		sub.replayed(chunks(1, 2));
		sub.push(done(3));
		sub.push(chunk(4));
		await settle();
		expect(seen.seqs).toEqual([1, 2, 3]);
		expect(seen.ends).toBe(1);
		expect(seen.left).toBe(1);
		expect(sub.done).toBe(true);
		sub.fail(new Error("late"));
		sub.replayed([chunk(5)], 3);
		await settle();
		expect(seen.errors).toEqual([]);
		expect(seen.ends).toBe(1);
	});

	it("ends right after the replay when the log already ended at or before its after seq", () => {
		const { seen, callbacks } = recorder();
		new Subscription(7, callbacks).replayed([], 5);
		expect(seen.ends).toBe(1);
		expect(seen.seqs).toEqual([]);
		const running = recorder();
		new Subscription(7, running.callbacks).replayed([]);
		expect(running.seen.ends).toBe(0);
	});

	it("calls onError once, then nothing; without onError a failure other than not-found is logged", async () => {
		const { seen, callbacks, leave } = recorder();
		const sub = new Subscription(0, callbacks, undefined, leave);
		sub.fail(new Error("boom"));
		sub.fail(new Error("again"));
		sub.replayed([done(1)]);
		sub.push(chunk(2));
		await settle();
		expect(seen.errors.map(e => e.message)).toEqual(["boom"]);
		expect([seen.seqs, seen.ends, seen.left]).toEqual([[], 0, 1]);

		const logger = { warn: vi.fn(), error: vi.fn() };
		new Subscription(0, { onEvent: () => {} }, logger).fail(new GenerationNotFoundError("g"));
		expect(logger.warn).not.toHaveBeenCalled();
		new Subscription(0, { onEvent: () => {} }, logger).fail(new Error("store down"));
		expect(logger.warn).toHaveBeenCalledTimes(1);
	});

	it("delivers nothing after cancel, even what was already queued, and calls no callback", async () => {
		const { seen, callbacks, leave } = recorder();
		const sub = new Subscription(0, callbacks, undefined, leave);
		sub.replayed([chunk(1)]);
		sub.push(chunk(2));
		sub.cancel();
		sub.push(done(3));
		await settle();
		expect(seen.seqs).toEqual([1]);
		expect([seen.ends, seen.errors.length, seen.left]).toEqual([0, 0, 1]);
	});

	it("goes on delivering when a callback throws, and logs it", async () => {
		const logger = { warn: vi.fn(), error: vi.fn() };
		const seqs: number[] = [];
		const sub = new Subscription(
			0,
			{
				onEvent: e => {
					seqs.push(e.seq);
					if (e.seq === 1) throw new Error("bad consumer");
				}
			},
			logger
		);
		sub.replayed(chunks(1, 3));
		expect(seqs).toEqual([1, 2, 3]);
		expect(logger.error).toHaveBeenCalledTimes(1);
	});
});

const OPTIONS: GenerationLogOptions = { keyPrefix: "unit", maxEvents: 1000, ttlS: 60, runningTtlS: 600 };
const meta = (generationId: string) => ({ generationId, ownerId: "u", conversationId: null, messageId: "m" });

describe("MemoryGenerationLog subscriptions", () => {
	afterEach(() => {
		vi.useRealTimers();
	});

	it("gives a subscriber that joins mid-append every event once, in order, across the replay/live boundary", async () => {
		const log = new MemoryGenerationLog(OPTIONS);
		const writer = await log.create(meta("g"));
		for (let i = 1; i <= 3; i++) writer.append({ type: "chunk", delta: `tok-${i}` });
		const { seen, callbacks } = recorder();
		log.subscribe("g", 1, callbacks.onEvent, callbacks.onEnd, callbacks.onError);
		// Appended after subscribe but before its replay runs: in the replay and pushed live.
		writer.append({ type: "chunk", delta: "tok-4" });
		expect(seen.seqs).toEqual([]);
		await settle();
		expect(seen.seqs).toEqual([2, 3, 4]);
		writer.append({ type: "chunk", delta: "tok-5" });
		writer.append({ type: "done", messageId: "m", status: "completed", usage: { promptTokens: 1, completionTokens: 1 } });
		await settle();
		expect(seen.seqs).toEqual([2, 3, 4, 5, 6]);
		expect(seen.ends).toBe(1);
		await log.close();
	});

	it("keeps the order when a subscriber's own callback appends to the generation during its replay", async () => {
		const log = new MemoryGenerationLog(OPTIONS);
		const writer = await log.create(meta("g"));
		writer.append({ type: "chunk", delta: "a" });
		writer.append({ type: "chunk", delta: "b" });
		const seqs: number[] = [];
		log.subscribe("g", 0, e => {
			seqs.push(e.seq);
			if (e.seq <= 2) writer.append({ type: "chunk", delta: `after-${e.seq}` });
		});
		await settle();
		expect(seqs).toEqual([1, 2, 3, 4]);
		await log.close();
	});

	it("tells a subscriber of a generation that expires unfinished that it is gone, once", async () => {
		vi.useFakeTimers();
		const log = new MemoryGenerationLog({ ...OPTIONS, runningTtlS: 5 });
		const writer = await log.create(meta("g"));
		writer.append({ type: "chunk", delta: "a" });
		const { seen, callbacks } = recorder();
		log.subscribe("g", 0, callbacks.onEvent, callbacks.onEnd, callbacks.onError);
		await vi.advanceTimersByTimeAsync(4_000);
		expect(seen.seqs).toEqual([1]);
		expect(seen.errors).toEqual([]);
		await vi.advanceTimersByTimeAsync(1_000);
		expect(seen.errors).toHaveLength(1);
		expect(seen.errors[0]).toBeInstanceOf(GenerationNotFoundError);
		expect(await log.meta("g")).toBeUndefined();
		await log.close();
	});

	it("answers a subscription to an unknown generation, or on a closed log, with onError and no event", async () => {
		const log = new MemoryGenerationLog(OPTIONS);
		const unknown = recorder();
		log.subscribe("nope", 0, unknown.callbacks.onEvent, unknown.callbacks.onEnd, unknown.callbacks.onError);
		expect(unknown.seen.errors).toEqual([]);
		await settle();
		expect(unknown.seen.errors[0]).toBeInstanceOf(GenerationNotFoundError);
		await log.close();
		const closed = recorder();
		log.subscribe("nope", 0, closed.callbacks.onEvent, closed.callbacks.onEnd, closed.callbacks.onError);
		await settle();
		expect(closed.seen.errors.map(e => e.message)).toEqual(["generation log is closed"]);
		expect([unknown.seen.ends, closed.seen.ends]).toEqual([0, 0]);
	});
});
