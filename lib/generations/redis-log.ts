/**
 * The generation log of a cluster, in Redis Streams. One stream per generation,
 * `${keyPrefix}:gen:${id}`, whose entry IDs are `0-<seq>` (so a seq is its own stream position and
 * a resend of an already stored event is refused by Redis, never stored twice), trimmed with
 * `MAXLEN ~ maxEvents`; beside it `${keyPrefix}:gen:${id}:meta`, the meta as JSON. Both expire
 * `runningTtlS` after the start and `ttlS` after the terminal event.
 *
 * Each node has two connections: one for writes, replays and meta, and one dedicated reader that
 * runs a single `XREAD BLOCK` loop over every generation with local subscribers, however many
 * subscribers there are. A subscriber is first replayed with XRANGE on the command connection
 * while the reader goes on; the reader then continues each stream from a per-stream cursor, and
 * each subscriber from its own, so that replay and live meet with no gap and no duplicate.
 *
 * A stream that joins the loop while its XREAD is blocked would otherwise wait for the block
 * timeout: the loop is interrupted with `CLIENT UNBLOCK <reader id> TIMEOUT` from the command
 * connection, and the next XREAD includes it. Where CLIENT UNBLOCK is not allowed (ACLs, some
 * managed Redis offerings; probed before the first XREAD), the block timeout drops to
 * FALLBACK_BLOCK_MS instead.
 */
import { afterOf, callSubscriber } from "./subscriber";
import { setTimeout as sleep } from "node:timers/promises";
import { Redis, type ChainableCommander } from "ioredis";
import { redisOptions } from "../redis";
import { isTerminal, type GenerationEvent, type GenerationEventInput, type GenerationMeta } from "../chat-protocol";
import {
	GenerationNotFoundError,
	type GenerationLog,
	type GenerationLogLogger,
	type GenerationLogOptions,
	type GenerationWriter,
	type RedisGenerationLogConnection,
	type Unsubscribe
} from "./log";

/** With CLIENT UNBLOCK a new stream never waits for the timeout; it only bounds an idle loop's round trips. */
const BLOCK_MS = 1000;
/**
 * Without CLIENT UNBLOCK, the longest a new stream waits to join the loop. Redis checks blocking
 * timeouts in its event loop, every 1000/hz ms on an idle server (100 ms at the default hz 10), so
 * in practice this is ~100 ms.
 */
const FALLBACK_BLOCK_MS = 50;
/** Entries per stream per XREAD; a stream with more goes on in the next round. */
const READ_COUNT = 500;
/** CLIENT UNBLOCK answers 0 while the XREAD it targets is still on its way to Redis: retry, 1 ms apart. */
const UNBLOCK_TRIES = 20;
/** How long a command waits for the connection to be ready (it has no offline queue) before failing. */
const CONNECT_WAIT_MS = 1000;
/** close() lets the command connection finish what it was sent for at most this long. */
const QUIT_GRACE_MS = 500;
const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 2000;
/** The one field of each stream entry: the event without its seq, as JSON. */
const FIELD = "e";

const streamId = (seq: number): string => `0-${seq}`;
const seqOf = (id: string): number => Number(id.slice(id.indexOf("-") + 1));
const asError = (err: unknown): Error => (err instanceof Error ? err : new Error(String(err)));
const noop = (): void => {};

type Entry = [id: string, fields: string[]];
type PipelineResults = Array<[error: Error | null, result: unknown]> | null;

function decode([id, fields]: Entry): GenerationEvent {
	for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === FIELD) return { seq: seqOf(id), ...(JSON.parse(fields[i + 1]) as GenerationEventInput) };
	throw new Error(`generation log entry ${id} has no "${FIELD}" field`);
}

/** The replies of a pipeline, or its first error. */
function repliesOf(results: PipelineResults, accept?: (err: Error) => boolean): unknown[] {
	if (!results) throw new Error("Redis pipeline was discarded");
	return results.map(([err, result]) => {
		if (err && !accept?.(err)) throw err;
		return result;
	});
}

interface Keys {
	stream: string;
	meta: string;
}

interface WriterContext {
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
class RedisWriter implements GenerationWriter {
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

	constructor(ctx: WriterContext, keys: Keys, meta: GenerationMeta) {
		this.#ctx = ctx;
		this.#keys = keys;
		this.#meta = meta;
	}

	get generationId(): string {
		return this.#meta.generationId;
	}

	append(event: GenerationEventInput): number {
		if (this.#ended) throw new Error(`generation ${this.generationId} has ended: nothing can be appended after its terminal event`);
		const seq = ++this.#seq;
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
		if (results instanceof Error) return this.#failed(results);
		try {
			// After a partial failure the resent events that did get stored are refused as not newer: they are stored.
			repliesOf(results, err => /equal or smaller than the target stream top item/i.test(err.message));
		} catch (err) {
			return this.#failed(asError(err));
		}
		this.#queue.splice(0, batch.length);
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
class WriteBatcher {
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

interface Subscriber {
	/** The last seq delivered (or skipped: the subscriber asked for events after it). */
	cursor: number;
	/** Events the reader brought while this subscriber's replay was under way; undefined once live. */
	pending: GenerationEvent[] | undefined;
	onEvent: (e: GenerationEvent) => void;
	onEnd?: () => void;
	onError?: (err: Error) => void;
	/** Ended, failed or unsubscribed: nothing more is delivered. */
	done: boolean;
}

/** One stream the reader follows for the subscribers of this node. */
interface Channel {
	generationId: string;
	keys: Keys;
	/** The last seq the reader has read; undefined until a replay found the stream's top, and the reader leaves the stream out until then. */
	cursor: number | undefined;
	subscribers: Set<Subscriber>;
}

export class RedisGenerationLog implements GenerationLog {
	readonly #opts: GenerationLogOptions;
	readonly #logger?: GenerationLogLogger;
	readonly #redis: Redis;
	/** The reader's own connection: XREAD BLOCK holds it, so nothing else may use it. */
	readonly #reader: Redis;
	/** By stream key. */
	readonly #channels = new Map<string, Channel>();
	readonly #stopped = new AbortController();
	readonly #writerContext: WriterContext;
	readonly #batcher: WriteBatcher;
	#closed = false;
	#loop?: Promise<void>;
	/** The XREAD in flight. */
	#read?: Promise<unknown>;
	/** A stream joined the loop after the XREAD in flight was sent. */
	#readStale = false;
	#wakeIdle?: () => void;
	#unblocking = false;
	#blockMs = BLOCK_MS;
	#unblockProbed = false;
	/** CLIENT ID of the reader's connection, for CLIENT UNBLOCK; a reconnection changes it. */
	#readerId?: number;
	#readyWait?: Promise<void>;
	readonly #outage = { redis: false, reader: false };

	constructor(opts: GenerationLogOptions, connection: RedisGenerationLogConnection, logger?: GenerationLogLogger) {
		this.#opts = opts;
		this.#logger = logger;
		const name = connection.connectionName ?? "chatmesh:generations";
		const base = redisOptions(connection.url);
		this.#redis = new Redis({ ...base, connectionName: `${name}:cmd` });
		// The reader's commands wait out a reconnection (queued, no retry limit) instead of failing:
		// the loop then simply goes on from its cursors.
		this.#reader = new Redis({ ...base, connectionName: `${name}:reader`, enableOfflineQueue: true, maxRetriesPerRequest: null });
		this.#watch(this.#redis, "redis");
		this.#watch(this.#reader, "reader");
		this.#reader.on("close", () => (this.#readerId = undefined));
		this.#batcher = new WriteBatcher(this.#redis, () => this.#ready());
		this.#writerContext = { opts, logger, schedule: writer => this.#batcher.schedule(writer) };
	}

	#keys(generationId: string): Keys {
		const stream = `${this.#opts.keyPrefix}:gen:${generationId}`;
		return { stream, meta: `${stream}:meta` };
	}

	/** Logs a connection's failure once per outage (ioredis keeps reconnecting on its own). */
	#watch(client: Redis, which: "redis" | "reader"): void {
		client.on("error", (err: Error) => {
			if (this.#outage[which] || this.#closed) return;
			this.#outage[which] = true;
			this.#logger?.warn(`Generation log: Redis ${which === "reader" ? "reader " : ""}connection failed; retrying`, err);
		});
		client.on("ready", () => (this.#outage[which] = false));
	}

	/**
	 * Right after start-up the connection is still coming up, and without an offline queue a command
	 * sent now would fail: wait for it a little. All callers share one wait (and one listener).
	 */
	#ready(): Promise<void> {
		const status = this.#redis.status;
		if (status === "ready" || status === "end" || this.#closed) return Promise.resolve();
		this.#readyWait ??= new Promise<void>(resolve => {
			const done = () => {
				clearTimeout(timer);
				this.#redis.off("ready", done);
				this.#readyWait = undefined;
				resolve();
			};
			const timer = setTimeout(done, CONNECT_WAIT_MS);
			this.#redis.once("ready", done);
		});
		return this.#readyWait;
	}

	async create(meta: Omit<GenerationMeta, "state">): Promise<GenerationWriter> {
		if (this.#closed) throw new Error("generation log is closed");
		const full: GenerationMeta = { ...meta, state: "running" };
		const keys = this.#keys(meta.generationId);
		await this.#ready();
		const stored = await this.#redis.set(keys.meta, JSON.stringify(full), "EX", this.#opts.runningTtlS, "NX");
		if (stored !== "OK") throw new Error(`generation ${meta.generationId} exists already`);
		return new RedisWriter(this.#writerContext, keys, full);
	}

	async meta(generationId: string): Promise<GenerationMeta | undefined> {
		await this.#ready();
		const raw = await this.#redis.get(this.#keys(generationId).meta);
		return raw === null ? undefined : (JSON.parse(raw) as GenerationMeta);
	}

	async read(generationId: string, afterSeq: number): Promise<GenerationEvent[]> {
		await this.#ready();
		const entries = await this.#redis.xrange(this.#keys(generationId).stream, streamId(afterOf(afterSeq) + 1), "+");
		return entries.map(decode);
	}

	subscribe(generationId: string, afterSeq: number, onEvent: (e: GenerationEvent) => void, onEnd?: () => void, onError?: (err: Error) => void): Unsubscribe {
		const sub: Subscriber = { cursor: afterOf(afterSeq), pending: [], onEvent, onEnd, onError, done: false };
		if (this.#closed) {
			queueMicrotask(() => this.#fail(undefined, sub, new Error("generation log is closed")));
			return () => void (sub.done = true);
		}
		const keys = this.#keys(generationId);
		let channel = this.#channels.get(keys.stream);
		if (!channel) {
			channel = { generationId, keys, cursor: undefined, subscribers: new Set() };
			this.#channels.set(keys.stream, channel);
		}
		channel.subscribers.add(sub);
		void this.#replay(channel, sub);
		const joined = channel;
		return () => {
			sub.done = true;
			this.#leave(joined, sub);
		};
	}

	async close(): Promise<void> {
		if (this.#closed) return;
		this.#closed = true;
		this.#stopped.abort();
		this.#wakeIdle?.();
		for (const channel of this.#channels.values()) for (const sub of channel.subscribers) sub.done = true;
		this.#channels.clear();
		// QUIT would queue behind the blocked XREAD: drop the reader's socket at once.
		this.#reader.disconnect();
		await this.#loop;
		// The command connection may finish what it was sent (writers' last batches), briefly.
		let timer: NodeJS.Timeout | undefined;
		await Promise.race([this.#redis.quit().catch(noop), new Promise(resolve => (timer = setTimeout(resolve, QUIT_GRACE_MS)))]);
		clearTimeout(timer);
		this.#redis.disconnect();
	}

	/**
	 * Replays the stored events after the subscriber's cursor. The stream's top entry, read just
	 * before, is where the reader starts when this stream is new to it: the replay covers up to at
	 * least that entry, the reader everything after it.
	 */
	async #replay(channel: Channel, sub: Subscriber): Promise<void> {
		const { stream, meta } = channel.keys;
		let top: Entry | undefined;
		let entries: Entry[];
		let metaJson: string | null;
		try {
			await this.#ready();
			const replies = repliesOf(
				await this.#redis
					.pipeline()
					.xrevrange(stream, "+", "-", "COUNT", 1)
					.xrange(stream, streamId(sub.cursor + 1), "+")
					.get(meta)
					.exec()
			);
			top = (replies[0] as Entry[])[0];
			entries = replies[1] as Entry[];
			metaJson = replies[2] as string | null;
		} catch (err) {
			return this.#fail(channel, sub, asError(err));
		}
		const joins = channel.cursor === undefined;
		if (joins) channel.cursor = top ? seqOf(top[0]) : 0;

		if (!top && entries.length === 0 && metaJson === null) {
			this.#fail(channel, sub, new GenerationNotFoundError(channel.generationId));
		} else {
			for (const entry of entries) this.#deliver(channel, sub, entry);
			const pending = sub.pending ?? [];
			sub.pending = undefined;
			for (const event of pending) this.#deliverEvent(channel, sub, event);
			// The log already ends with the terminal event, and this subscriber has it or asked for what follows.
			if (!sub.done && top && seqOf(top[0]) <= sub.cursor && this.#isTerminalEntry(top)) this.#end(channel, sub);
		}
		if (joins && channel.subscribers.size > 0 && this.#channels.get(stream) === channel) this.#join();
	}

	#isTerminalEntry(entry: Entry): boolean {
		try {
			return isTerminal(decode(entry));
		} catch {
			return false;
		}
	}

	#deliver(channel: Channel, sub: Subscriber, entry: Entry): void {
		let event: GenerationEvent;
		try {
			event = decode(entry);
		} catch (err) {
			this.#logger?.error("Generation log: skipping an unreadable entry", { generationId: channel.generationId, err });
			return;
		}
		this.#deliverEvent(channel, sub, event);
	}

	/** The one place events reach a subscriber: in increasing seq, each at most once. */
	#deliverEvent(channel: Channel, sub: Subscriber, event: GenerationEvent): void {
		if (sub.done || event.seq <= sub.cursor) return;
		sub.cursor = event.seq;
		callSubscriber(this.#logger, "onEvent", () => sub.onEvent(event));
		if (isTerminal(event)) this.#end(channel, sub);
	}

	#end(channel: Channel, sub: Subscriber): void {
		sub.done = true;
		this.#leave(channel, sub);
		callSubscriber(this.#logger, "onEnd", () => sub.onEnd?.());
	}

	#fail(channel: Channel | undefined, sub: Subscriber, err: Error): void {
		if (sub.done) return;
		sub.done = true;
		if (channel) this.#leave(channel, sub);
		if (!sub.onError) {
			if (!(err instanceof GenerationNotFoundError)) this.#logger?.warn("Generation log: a subscription failed", err);
			return;
		}
		callSubscriber(this.#logger, "onError", () => sub.onError?.(err));
	}

	/** The last subscriber of a stream takes it out of the loop (from its next XREAD on). */
	#leave(channel: Channel, sub: Subscriber): void {
		channel.subscribers.delete(sub);
		if (channel.subscribers.size === 0 && this.#channels.get(channel.keys.stream) === channel) this.#channels.delete(channel.keys.stream);
	}

	/** A stream has joined: the loop must include it now, not after its current XREAD times out. */
	#join(): void {
		this.#readStale = true;
		this.#loop ??= this.#run();
		if (this.#wakeIdle) return this.#wakeIdle();
		if (this.#read) void this.#interrupt();
	}

	async #run(): Promise<void> {
		let failures = 0;
		while (!this.#closed) {
			try {
				this.#readerId ??= await this.#reader.client("ID");
				if (!this.#unblockProbed) {
					// The reader is not blocked now, so this unblocks nothing: it only tells whether we may.
					this.#unblockProbed = true;
					await this.#redis.client("UNBLOCK", this.#readerId, "TIMEOUT").catch((err: unknown) => this.#unblockDenied(err));
				}
				if (this.#closed) break;
				const live = [...this.#channels.values()].filter(c => c.cursor !== undefined && c.subscribers.size > 0);
				if (live.length === 0) {
					await new Promise<void>(resolve => (this.#wakeIdle = resolve));
					this.#wakeIdle = undefined;
					continue;
				}
				const read = this.#reader.xread(
					"COUNT",
					READ_COUNT,
					"BLOCK",
					this.#blockMs,
					"STREAMS",
					...live.map(c => c.keys.stream),
					...live.map(c => streamId(c.cursor ?? 0))
				);
				this.#read = read;
				this.#readStale = false;
				let reply: Awaited<typeof read>;
				try {
					reply = await read;
				} finally {
					this.#read = undefined;
				}
				if (failures > 0) this.#logger?.warn("Generation log: the reader reads again");
				failures = 0;
				if (reply) this.#dispatch(reply);
			} catch (err) {
				if (this.#closed) break;
				if (failures++ === 0) this.#logger?.warn("Generation log: the reader's XREAD failed; retrying", err);
				await sleep(Math.min(RETRY_MIN_MS * 2 ** failures, RETRY_MAX_MS), undefined, { signal: this.#stopped.signal }).catch(noop);
			}
		}
	}

	#dispatch(reply: Array<[key: string, items: Entry[]]>): void {
		for (const [key, entries] of reply) {
			const channel = this.#channels.get(key);
			// Left since the XREAD was sent, or joined anew and not replayed yet (its replay covers these).
			if (!channel || channel.cursor === undefined) continue;
			for (const entry of entries) {
				const seq = seqOf(entry[0]);
				if (seq <= channel.cursor) continue;
				channel.cursor = seq;
				let event: GenerationEvent;
				try {
					event = decode(entry);
				} catch (err) {
					this.#logger?.error("Generation log: skipping an unreadable entry", { generationId: channel.generationId, err });
					continue;
				}
				for (const sub of channel.subscribers) {
					if (sub.pending) sub.pending.push(event);
					else this.#deliverEvent(channel, sub, event);
				}
			}
		}
	}

	/**
	 * Ends the blocked XREAD early (as if it timed out), so the loop sends the next one with the new
	 * streams. The XREAD and CLIENT UNBLOCK travel on different connections: an UNBLOCK that finds
	 * the reader not blocked yet answers 0 and is sent again.
	 */
	async #interrupt(): Promise<void> {
		if (this.#unblocking) return;
		this.#unblocking = true;
		try {
			for (let tries = 0; tries < UNBLOCK_TRIES && !this.#closed; tries++) {
				const read = this.#read;
				const id = this.#readerId;
				// No XREAD in flight (the loop builds the next one with every stream), or it has them all.
				if (!read || !this.#readStale || id === undefined) return;
				const unblocked = await this.#redis.client("UNBLOCK", id, "TIMEOUT");
				if (unblocked === 1) {
					// A stream may have joined after the next XREAD was built: look again once it is.
					await read.catch(noop);
					tries = 0;
				} else if (this.#read === read) await sleep(1);
			}
		} catch (err) {
			this.#unblockDenied(err);
		} finally {
			this.#unblocking = false;
		}
	}

	/** A refused CLIENT UNBLOCK (not a connection failure) makes the loop poll with short blocks instead. */
	#unblockDenied(err: unknown): void {
		if (!/NOPERM|unknown (sub)?command/i.test(asError(err).message) || this.#blockMs === FALLBACK_BLOCK_MS) return;
		this.#blockMs = FALLBACK_BLOCK_MS;
		this.#logger?.warn(
			`Generation log: CLIENT UNBLOCK is not allowed; new subscriptions may wait a short block timeout (${FALLBACK_BLOCK_MS} ms, ~100 ms at Redis hz 10)`,
			err
		);
	}
}
