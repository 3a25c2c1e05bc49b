/**
 * The generation log of one embedded process: per generation an array of events and the
 * subscribers following it. Bounded and expiring like the Redis log: at most `maxEvents` events
 * per generation (the oldest are dropped, so a replay from before them starts at the oldest one
 * kept), and a generation is dropped `ttlS` after its terminal event, or `runningTtlS` after it
 * started when it never ends. Nothing survives a restart.
 */
import { isTerminal, type GenerationEvent, type GenerationEventInput, type GenerationMeta } from "../chat-protocol";
import {
	GenerationNotFoundError,
	type GenerationLog,
	type GenerationLogLogger,
	type GenerationLogOptions,
	type GenerationWriter,
	type Unsubscribe
} from "./log";
import { afterOf, failedSubscription, type SubscriberCallbacks, Subscription } from "./subscriber";
import { generationLogStats } from "./stats";

// setTimeout holds at most 2^31-1 ms (24.8 days); anything longer would fire at once.
const MAX_TIMER_MS = 2 ** 31 - 1;

interface Generation {
	meta: GenerationMeta;
	/** Kept events from index `head` on, with contiguous seqs. */
	events: GenerationEvent[];
	head: number;
	/** The terminal event is in the log. */
	ended: boolean;
	subscribers: Set<Subscription>;
	expiry?: NodeJS.Timeout;
}

class MemoryWriter implements GenerationWriter {
	#seq = 0;
	#ended = false;

	constructor(
		readonly generationId: string,
		private readonly store: (event: GenerationEvent) => void,
		/** The seq of the last event already stored (an adopted generation's). */
		after = 0
	) {
		this.#seq = after;
	}

	append(event: GenerationEventInput): number {
		if (this.#ended) throw new Error(`generation ${this.generationId} has ended: nothing can be appended after its terminal event`);
		const seq = ++this.#seq;
		if (isTerminal(event)) this.#ended = true;
		this.store({ seq, ...event });
		generationLogStats.appended++;
		generationLogStats.stored++;
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
		const gen: Generation = { meta: { ...meta, state: "running" }, events: [], head: 0, ended: false, subscribers: new Set() };
		this.#generations.set(generationId, gen);
		this.#expireIn(generationId, gen, this.#opts.runningTtlS);
		return new MemoryWriter(generationId, event => this.#store(generationId, gen, event));
	}

	async adopt(generationId: string): Promise<GenerationWriter | undefined> {
		const gen = this.#generations.get(generationId);
		if (!gen || gen.ended) return undefined;
		return new MemoryWriter(generationId, event => this.#store(generationId, gen, event), gen.events.at(-1)?.seq ?? 0);
	}

	async meta(generationId: string): Promise<GenerationMeta | undefined> {
		const gen = this.#generations.get(generationId);
		return gen ? { ...gen.meta } : undefined;
	}

	async read(generationId: string, afterSeq: number): Promise<GenerationEvent[]> {
		const gen = this.#generations.get(generationId);
		return gen ? this.#eventsAfter(gen, afterSeq) : [];
	}

	subscribe(generationId: string, afterSeq: number, onEvent: (e: GenerationEvent) => void, onEnd?: () => void, onError?: (err: Error) => void): Unsubscribe {
		const callbacks: SubscriberCallbacks = { onEvent, onEnd, onError };
		if (this.#closed) return failedSubscription(new Error("generation log is closed"), callbacks, this.#logger);
		const gen = this.#generations.get(generationId);
		if (!gen) return failedSubscription(new GenerationNotFoundError(generationId), callbacks, this.#logger);
		const sub = new Subscription(afterSeq, callbacks, this.#logger, () => gen.subscribers.delete(sub));
		gen.subscribers.add(sub);
		// The replay reads the log when it runs, so no callback runs inside `subscribe`; what is appended meanwhile is pushed as well, and skipped once replayed.
		queueMicrotask(() => {
			const last = gen.events.at(-1);
			sub.replayed(this.#eventsAfter(gen, sub.after), gen.ended ? last?.seq : undefined);
		});
		return () => sub.cancel();
	}

	async close(): Promise<void> {
		this.#closed = true;
		for (const gen of this.#generations.values()) {
			clearTimeout(gen.expiry);
			for (const sub of gen.subscribers) sub.cancel();
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
		for (const sub of gen.subscribers) sub.push(event);
	}

	/** The kept events with seq > afterSeq (from the oldest kept one when afterSeq was dropped). */
	#eventsAfter(gen: Generation, afterSeq: number): GenerationEvent[] {
		const first = gen.events[gen.head];
		if (!first) return [];
		return gen.events.slice(gen.head + Math.max(0, afterOf(afterSeq) + 1 - first.seq));
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
		if (this.#generations.get(generationId) === gen) this.#generations.delete(generationId);
		// Only subscribers of a generation that never ended are left: tell them it is gone.
		for (const sub of gen.subscribers) sub.fail(new GenerationNotFoundError(generationId));
	}
}
