/**
 * The writing half of the Redis generation log: each writer queues its events and appends them
 * with XADD (trimmed with `MAXLEN ~ maxEvents`, the entry ID being the seq, so a resend of an
 * already stored event is refused by Redis, never stored twice), and the node sends all writers'
 * batches in one pipeline per turn of the event loop. The terminal event's batch also marks the
 * meta finished and shortens both keys' expiry to ttlS.
 */
import type { ChainableCommander, Redis } from "ioredis";
import { isTerminal, type GenerationEventInput, type GenerationMeta } from "../chat-protocol";
import type { GenerationLogLogger, GenerationLogOptions, GenerationWriter } from "./log";
import { asError, FIELD, type Keys, type PipelineResults, repliesOf, streamId } from "./redis-stream";
import { generationLogStats } from "./stats";

export interface WriterContext {
	opts: GenerationLogOptions;
	logger?: GenerationLogLogger;
	/** Puts the writer in the node's next pipeline (see WriteBatcher). */
	schedule(writer: RedisWriter): void;
}

interface PendingEvent {
	seq: number;
	json: string;
	terminal: boolean;
}

/** One writer's part of a shared pipeline: how many commands it added, and what to do with their replies (or the pipeline's failure). */
interface BatchPart {
	commands: number;
	done(results: PipelineResults | Error): void;
}

/**
 * Appends go to the writer's queue and are written in order, one batch in flight per writer (what
 * arrives meanwhile goes in the next one), so the producer never waits and a slow Redis only makes
 * batches bigger. A failed batch stays queued and is sent again with the next append or flush.
 */
export class RedisWriter implements GenerationWriter {
	readonly #ctx: WriterContext;
	readonly #keys: Keys;
	readonly #meta: GenerationMeta;
	#seq = 0;
	#ended = false;
	#queue: PendingEvent[] = [];
	#writing = false;
	#streamExpirySet = false;
	/** Logged the current failure already: once per outage, not per event. */
	#failing = false;
	/** The highest seq Redis confirmed. */
	#stored = 0;
	#waiters: Array<{ seq: number; resolve: () => void; reject: (err: Error) => void }> = [];

	/** `after`: the seq of the last event already stored (an adopted generation's; its stream has its expiry). */
	constructor(ctx: WriterContext, keys: Keys, meta: GenerationMeta, after = 0) {
		this.#ctx = ctx;
		this.#keys = keys;
		this.#meta = meta;
		this.#seq = after;
		this.#stored = after;
		this.#streamExpirySet = after > 0;
	}

	get generationId(): string {
		return this.#meta.generationId;
	}

	append(event: GenerationEventInput): number {
		if (this.#ended) throw new Error(`generation ${this.generationId} has ended: nothing can be appended after its terminal event`);
		const seq = ++this.#seq;
		generationLogStats.appended++;
		const terminal = isTerminal(event);
		if (terminal) this.#ended = true;
		this.#queue.push({ seq, json: JSON.stringify(event), terminal });
		this.#ctx.schedule(this);
		return seq;
	}

	flush(): Promise<void> {
		// The queue only shrinks when Redis confirmed a batch.
		if (this.#queue.length === 0) return Promise.resolve();
		return new Promise((resolve, reject) => {
			this.#waiters.push({ seq: this.#seq, resolve, reject });
			this.#ctx.schedule(this);
		});
	}

	/** Adds what is queued to the pipeline; nothing while a batch of this writer is in flight. */
	addBatch(pipeline: ChainableCommander): BatchPart | undefined {
		if (this.#writing || this.#queue.length === 0) return undefined;
		this.#writing = true;
		const batch = this.#queue.slice();
		const { opts } = this.#ctx;
		const { stream, meta } = this.#keys;
		const terminal = batch.some(e => e.terminal);
		const before = pipeline.length;
		// The finished meta goes before the terminal event: whoever sees "done" finds the meta finished.
		if (terminal) pipeline.set(meta, JSON.stringify({ ...this.#meta, state: "finished" } satisfies GenerationMeta), "EX", opts.ttlS);
		for (const e of batch) pipeline.xadd(stream, "MAXLEN", "~", opts.maxEvents, streamId(e.seq), FIELD, e.json);
		// The stream exists from its first event: give it the running expiry then, not with every event.
		if (terminal) pipeline.expire(stream, opts.ttlS);
		else if (!this.#streamExpirySet) pipeline.expire(stream, opts.runningTtlS);
		return { commands: pipeline.length - before, done: results => this.#written(batch, results) };
	}

	#written(batch: PendingEvent[], results: PipelineResults | Error): void {
		this.#writing = false;
		try {
			if (results instanceof Error) throw results;
			// After a partial failure the resent events that did get stored are refused as not newer: they are stored.
			repliesOf(results, err => /equal or smaller than the target stream top item/i.test(err.message));
		} catch (err) {
			this.#failed(asError(err));
			return;
		}
		this.#queue.splice(0, batch.length);
		generationLogStats.stored += batch.length;
		this.#stored = batch[batch.length - 1].seq;
		this.#streamExpirySet = true;
		if (this.#failing) {
			this.#failing = false;
			this.#ctx.logger?.warn("Generation log: events are stored again", { generationId: this.generationId });
		}
		// A producer that keeps appending must not hold back a flush of what came before.
		const waiters = this.#waiters;
		this.#waiters = waiters.filter(w => w.seq > this.#stored);
		for (const w of waiters) if (w.seq <= this.#stored) w.resolve();
		if (this.#queue.length > 0) this.#ctx.schedule(this);
	}

	#failed(err: Error): void {
		if (!this.#failing) {
			this.#failing = true;
			this.#ctx.logger?.error("Generation log: events could not be stored; they are sent again with the next append or flush", {
				generationId: this.generationId,
				err
			});
		}
		const waiters = this.#waiters;
		this.#waiters = [];
		for (const w of waiters) w.reject(err);
	}
}

/**
 * The node's writes in one pipeline per turn of the event loop: every generation with something
 * queued adds its batch, and the pipeline goes out after the I/O of this turn (setImmediate), so
 * the tokens of many answers arriving together cost one Redis round trip and one socket write
 * instead of one each.
 */
export class WriteBatcher {
	readonly #dirty = new Set<RedisWriter>();
	#scheduled = false;

	constructor(
		private readonly redis: Redis,
		private readonly ready: () => Promise<void>
	) {}

	schedule(writer: RedisWriter): void {
		this.#dirty.add(writer);
		if (this.#scheduled) return;
		this.#scheduled = true;
		setImmediate(() => void this.#write());
	}

	async #write(): Promise<void> {
		this.#scheduled = false;
		const pipeline = this.redis.pipeline();
		const parts: BatchPart[] = [];
		for (const writer of this.#dirty) {
			const part = writer.addBatch(pipeline);
			if (part) parts.push(part);
		}
		this.#dirty.clear();
		if (parts.length === 0) return;
		let results: PipelineResults | Error;
		try {
			await this.ready();
			results = await pipeline.exec();
		} catch (err) {
			results = asError(err);
		}
		let offset = 0;
		for (const part of parts) {
			part.done(results instanceof Error || !results ? results : results.slice(offset, offset + part.commands));
			offset += part.commands;
		}
	}
}
