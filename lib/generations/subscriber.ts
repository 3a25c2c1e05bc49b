/**
 * One subscriber of a generation, as both generation logs serve it: its "after seq", a replay of
 * what the log held when it subscribed, then the live events, in increasing seq with no gap or
 * duplicate where the two meet (events that arrive during the replay wait for it), onEnd after the
 * terminal event, and onEnd or onError at most once, after which nothing more is delivered.
 * Callbacks run asynchronously (never inside `push`), and one that throws does not break delivery
 * to the others (its error is logged, delivery goes on).
 */
import { isTerminal, type GenerationEvent } from "../chat-protocol";
import { GenerationNotFoundError, type GenerationLogLogger, type Unsubscribe } from "./log";
import { generationLogStats } from "./stats";

export interface SubscriberCallbacks {
	onEvent: (e: GenerationEvent) => void;
	onEnd?: () => void;
	onError?: (err: Error) => void;
}

function callSubscriber(logger: GenerationLogLogger | undefined, which: "onEvent" | "onEnd" | "onError", call: () => void): void {
	try {
		call();
	} catch (err) {
		logger?.error(`Generation log: a subscriber's ${which} threw`, err);
	}
}

/** A caller's "after seq" as a whole number >= 0 (anything else means from the start). */
export const afterOf = (seq: number): number => (Number.isFinite(seq) && seq > 0 ? Math.floor(seq) : 0);

export class Subscription {
	/** The last seq delivered (or skipped: the subscriber asked for events after it). */
	#cursor: number;
	/** Ended, failed or cancelled: nothing more is delivered. */
	#done = false;
	/** Until `replayed`, live events wait in the queue. */
	#replaying = true;
	#queue: GenerationEvent[] = [];
	/** A delivery of the queue is due; pushes in the same tick share it. */
	#scheduled = false;

	/** `leave` runs once when the subscription is over (ended, failed or cancelled), so the log can forget it. */
	constructor(
		afterSeq: number,
		private readonly callbacks: SubscriberCallbacks,
		private readonly logger?: GenerationLogLogger,
		private readonly leave?: () => void
	) {
		this.#cursor = afterOf(afterSeq);
	}

	/** Where the replay starts: the events with a seq above this one. */
	get after(): number {
		return this.#cursor;
	}

	get done(): boolean {
		return this.#done;
	}

	/** A live event, in seq order; delivered after the replay, and never inside this call. */
	push(event: GenerationEvent): void {
		if (this.#done) return;
		this.#queue.push(event);
		if (this.#replaying || this.#scheduled) return;
		this.#scheduled = true;
		queueMicrotask(() => this.#drain());
	}

	/**
	 * Delivers the replay (the stored events after `after`, read once the subscription was in
	 * place), then what arrived live meanwhile, and goes live. `terminalSeq`: the seq of the log's
	 * terminal event when the log already ends with it, so that a subscriber that has it (or asked
	 * for what follows it) ends now.
	 */
	replayed(events: Iterable<GenerationEvent>, terminalSeq?: number): void {
		if (this.#done) return;
		for (const event of events) {
			if (this.#done) return;
			this.#deliver(event);
		}
		this.#replaying = false;
		this.#drain();
		if (!this.#done && terminalSeq !== undefined && this.#cursor >= terminalSeq) this.#end();
	}

	/** Calls onError (once); without onError, a failure other than "not found" is logged. */
	fail(err: Error): void {
		if (!this.#finish()) return;
		if (this.callbacks.onError) callSubscriber(this.logger, "onError", () => this.callbacks.onError?.(err));
		else if (!(err instanceof GenerationNotFoundError)) this.logger?.warn("Generation log: a subscription failed", err);
	}

	/** Unsubscribe (or the log closed): nothing more, no callback. */
	cancel(): void {
		this.#finish();
	}

	#drain(): void {
		this.#scheduled = false;
		const queue = this.#queue;
		this.#queue = [];
		for (const event of queue) {
			if (this.#done) return;
			this.#deliver(event);
		}
	}

	/** The one place events reach the subscriber: in increasing seq, each at most once. */
	#deliver(event: GenerationEvent): void {
		if (event.seq <= this.#cursor) return;
		this.#cursor = event.seq;
		generationLogStats.delivered++;
		callSubscriber(this.logger, "onEvent", () => this.callbacks.onEvent(event));
		if (!this.#done && isTerminal(event)) this.#end();
	}

	#end(): void {
		if (this.#finish()) callSubscriber(this.logger, "onEnd", () => this.callbacks.onEnd?.());
	}

	/** Marks the subscription over; false when it was already. */
	#finish(): boolean {
		if (this.#done) return false;
		this.#done = true;
		this.#queue = [];
		this.leave?.();
		return true;
	}
}

/** A subscription that could not start (the log is closed, or the generation unknown): onError, asynchronously. */
export function failedSubscription(err: Error, callbacks: SubscriberCallbacks, logger?: GenerationLogLogger): Unsubscribe {
	const sub = new Subscription(0, callbacks, logger);
	queueMicrotask(() => sub.fail(err));
	return () => sub.cancel();
}
