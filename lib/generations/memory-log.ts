/**
 * The generation log of one embedded process: per generation an array of events and the
 * subscribers following it. Bounded and expiring like the Redis log: at most `maxEvents` events
 * per generation (the oldest are dropped, so a replay from before them starts at the oldest one
 * kept), and a generation is dropped `ttlS` after its terminal event, or `runningTtlS` after it
 * started when it never ends. Nothing survives a restart.
 */
import { afterOf, callSubscriber } from "./subscriber";
import { isTerminal, type GenerationEvent, type GenerationEventInput, type GenerationMeta } from "../chat-protocol";
import {
	GenerationNotFoundError,
	type GenerationLog,
	type GenerationLogLogger,
	type GenerationLogOptions,
	type GenerationWriter,
	type Unsubscribe
} from "./log";

// setTimeout holds at most 2^31-1 ms (24.8 days); anything longer would fire at once.
const MAX_TIMER_MS = 2 ** 31 - 1;

interface Subscriber {
	/** The last seq delivered (or skipped: the subscriber asked for events after it). */
	cursor: number;
	onEvent: (e: GenerationEvent) => void;
	onEnd?: () => void;
	onError?: (err: Error) => void;
	/** Ended, failed or unsubscribed: nothing more is delivered. */
	done: boolean;
	/** A delivery is queued; appends in the same tick share it. */
	scheduled: boolean;
}

interface Generation {
	meta: GenerationMeta;
	/** Kept events from index `head` on, with contiguous seqs. */
	events: GenerationEvent[];
	head: number;
	/** The terminal event is in the log. */
	ended: boolean;
	dropped: boolean;
	subscribers: Set<Subscriber>;
	expiry?: NodeJS.Timeout;
}

class MemoryWriter implements GenerationWriter {
	#seq = 0;
	#ended = false;

	constructor(
		readonly generationId: string,
		private readonly store: (event: GenerationEvent) => void
	) {}

	append(event: GenerationEventInput): number {
		if (this.#ended) throw new Error(`generation ${this.generationId} has ended: nothing can be appended after its terminal event`);
		const seq = ++this.#seq;
		if (isTerminal(event)) this.#ended = true;
		this.store({ seq, ...event });
		return seq;
	}

	flush(): Promise<void> {
		// Stored synchronously by append.
		return Promise.resolve();
	}
}

export class MemoryGenerationLog implements GenerationLog {
	readonly #opts: GenerationLogOptions;
	readonly #logger?: GenerationLogLogger;
	readonly #generations = new Map<string, Generation>();
	#closed = false;

	constructor(opts: GenerationLogOptions, logger?: GenerationLogLogger) {
		this.#opts = opts;
		this.#logger = logger;
	}

	async create(meta: Omit<GenerationMeta, "state">): Promise<GenerationWriter> {
		if (this.#closed) throw new Error("generation log is closed");
		const { generationId } = meta;
		if (this.#generations.has(generationId)) throw new Error(`generation ${generationId} exists already`);
		const gen: Generation = { meta: { ...meta, state: "running" }, events: [], head: 0, ended: false, dropped: false, subscribers: new Set() };
		this.#generations.set(generationId, gen);
		this.#expireIn(generationId, gen, this.#opts.runningTtlS);
		return new MemoryWriter(generationId, event => this.#store(generationId, gen, event));
	}

	async meta(generationId: string): Promise<GenerationMeta | undefined> {
		const gen = this.#generations.get(generationId);
		return gen ? { ...gen.meta } : undefined;
	}

	async read(generationId: string, afterSeq: number): Promise<GenerationEvent[]> {
		const gen = this.#generations.get(generationId);
		return gen ? gen.events.slice(this.#indexAfter(gen, afterSeq)) : [];
	}

	subscribe(generationId: string, afterSeq: number, onEvent: (e: GenerationEvent) => void, onEnd?: () => void, onError?: (err: Error) => void): Unsubscribe {
		const sub: Subscriber = { cursor: afterOf(afterSeq), onEvent, onEnd, onError, done: false, scheduled: false };
		const gen = this.#closed ? undefined : this.#generations.get(generationId);
		if (!gen) {
			queueMicrotask(() => this.#fail(undefined, sub, this.#closed ? new Error("generation log is closed") : new GenerationNotFoundError(generationId)));
			return () => void (sub.done = true);
		}
		gen.subscribers.add(sub);
		this.#schedule(gen, sub);
		return () => {
			sub.done = true;
			gen.subscribers.delete(sub);
		};
	}

	async close(): Promise<void> {
		this.#closed = true;
		for (const gen of this.#generations.values()) {
			clearTimeout(gen.expiry);
			for (const sub of gen.subscribers) sub.done = true;
		}
		this.#generations.clear();
	}

	#store(generationId: string, gen: Generation, event: GenerationEvent): void {
		gen.events.push(event);
		if (gen.events.length - gen.head > this.#opts.maxEvents) {
			gen.head += 1;
			// Moving a pointer is O(1); copy the kept half only once the dropped half is as long.
			if (gen.head >= this.#opts.maxEvents) {
				gen.events = gen.events.slice(gen.head);
				gen.head = 0;
			}
		}
		if (isTerminal(event)) {
			gen.ended = true;
			gen.meta.state = "finished";
			this.#expireIn(generationId, gen, this.#opts.ttlS);
		}
		for (const sub of gen.subscribers) this.#schedule(gen, sub);
	}

	/** The index of the first kept event with seq > afterSeq (the oldest kept one when afterSeq was dropped). */
	#indexAfter(gen: Generation, afterSeq: number): number {
		const first = gen.events[gen.head];
		if (!first) return gen.events.length;
		return Math.min(gen.events.length, gen.head + Math.max(0, afterOf(afterSeq) + 1 - first.seq));
	}

	/** Delivers asynchronously, so no callback runs inside `subscribe` or the producer's `append`. */
	#schedule(gen: Generation, sub: Subscriber): void {
		if (sub.scheduled || sub.done) return;
		sub.scheduled = true;
		queueMicrotask(() => {
			sub.scheduled = false;
			this.#drain(gen, sub);
		});
	}

	#drain(gen: Generation, sub: Subscriber): void {
		if (sub.done) return;
		if (gen.dropped) return this.#fail(gen, sub, new GenerationNotFoundError(gen.meta.generationId));
		// By index: the array may be replaced by a callback's append, so look it up each time.
		for (let i = this.#indexAfter(gen, sub.cursor); i < gen.events.length && !sub.done; i = this.#indexAfter(gen, sub.cursor)) {
			const event = gen.events[i];
			sub.cursor = event.seq;
			callSubscriber(this.#logger, "onEvent", () => sub.onEvent(event));
		}
		const last = gen.events.at(-1);
		// The log ends with the terminal event and this subscriber has it (or asked for what follows it).
		if (!sub.done && gen.ended && last && sub.cursor >= last.seq) this.#end(gen, sub);
	}

	#end(gen: Generation, sub: Subscriber): void {
		sub.done = true;
		gen.subscribers.delete(sub);
		callSubscriber(this.#logger, "onEnd", () => sub.onEnd?.());
	}

	#fail(gen: Generation | undefined, sub: Subscriber, err: Error): void {
		if (sub.done) return;
		sub.done = true;
		gen?.subscribers.delete(sub);
		callSubscriber(this.#logger, "onError", () => sub.onError?.(err));
	}

	#expireIn(generationId: string, gen: Generation, seconds: number): void {
		clearTimeout(gen.expiry);
		// A writer that outlives close() arms no new timer.
		if (this.#closed) return;
		gen.expiry = setTimeout(() => this.#drop(generationId, gen), Math.min(seconds * 1000, MAX_TIMER_MS));
		// An expiry alone must not keep the process alive.
		gen.expiry.unref();
	}

	#drop(generationId: string, gen: Generation): void {
		gen.dropped = true;
		if (this.#generations.get(generationId) === gen) this.#generations.delete(generationId);
		// Only subscribers of a generation that never ended are left: tell them it is gone.
		for (const sub of gen.subscribers) this.#fail(gen, sub, new GenerationNotFoundError(generationId));
	}
}
