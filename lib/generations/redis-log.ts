/**
 * The generation log of a cluster, in Redis Streams. One stream per generation,
 * `${keyPrefix}:gen:${id}`, whose entry IDs are `0-<seq>` (so a seq is its own stream position and
 * a resend of an already stored event is refused by Redis, never stored twice), trimmed with
 * `MAXLEN ~ maxEvents`; beside it `${keyPrefix}:gen:${id}:meta`, the meta as JSON. Both expire
 * `runningTtlS` after the start and `ttlS` after the terminal event.
 *
 * Each node has two connections: one for writes, replays and meta (the writers batch on it, see
 * redis-writer.ts), and one dedicated to the reader's single `XREAD BLOCK` loop over every
 * generation with local subscribers (redis-reader.ts). This file opens them and composes the two.
 */
import { Redis } from "ioredis";
import { isTerminal, type GenerationEvent, type GenerationMeta } from "../chat-protocol";
import { redisOptions } from "../redis";
import type { GenerationLog, GenerationLogLogger, GenerationLogOptions, GenerationWriter, RedisGenerationLogConnection, Unsubscribe } from "./log";
import { RedisStreamReader } from "./redis-reader";
import { decode, keysOf, noop, streamId } from "./redis-stream";
import { RedisWriter, WriteBatcher, type WriterContext } from "./redis-writer";
import { afterOf, failedSubscription } from "./subscriber";

/** How long a command waits for the connection to be ready (it has no offline queue) before failing. */
const CONNECT_WAIT_MS = 1000;
/** close() lets the command connection finish what it was sent for at most this long. */
const QUIT_GRACE_MS = 500;

export class RedisGenerationLog implements GenerationLog {
	readonly #opts: GenerationLogOptions;
	readonly #logger?: GenerationLogLogger;
	readonly #redis: Redis;
	readonly #reader: RedisStreamReader;
	readonly #writerContext: WriterContext;
	#closed = false;
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
		const reader = new Redis({ ...base, connectionName: `${name}:reader`, enableOfflineQueue: true, maxRetriesPerRequest: null });
		this.#watch(this.#redis, "redis");
		this.#watch(reader, "reader");
		const ready = () => this.#ready();
		this.#reader = new RedisStreamReader(this.#redis, reader, ready, logger, connection.readerBlockMs);
		const batcher = new WriteBatcher(this.#redis, ready);
		this.#writerContext = { opts, logger, schedule: writer => batcher.schedule(writer) };
	}

	async create(meta: Omit<GenerationMeta, "state">): Promise<GenerationWriter> {
		if (this.#closed) throw new Error("generation log is closed");
		const full: GenerationMeta = { ...meta, state: "running" };
		const keys = keysOf(this.#opts.keyPrefix, meta.generationId);
		await this.#ready();
		const stored = await this.#redis.set(keys.meta, JSON.stringify(full), "EX", this.#opts.runningTtlS, "NX");
		if (stored !== "OK") throw new Error(`generation ${meta.generationId} exists already`);
		return new RedisWriter(this.#writerContext, keys, full);
	}

	async adopt(generationId: string): Promise<GenerationWriter | undefined> {
		if (this.#closed) throw new Error("generation log is closed");
		const keys = keysOf(this.#opts.keyPrefix, generationId);
		await this.#ready();
		const [raw, last] = await Promise.all([this.#redis.get(keys.meta), this.#redis.xrevrange(keys.stream, "+", "-", "COUNT", 1)]);
		if (raw === null) return undefined;
		const meta = JSON.parse(raw) as GenerationMeta;
		const lastEvent = last.length > 0 ? decode(last[0]) : undefined;
		if (meta.state === "finished" || (lastEvent && isTerminal(lastEvent))) return undefined;
		return new RedisWriter(this.#writerContext, keys, meta, lastEvent?.seq ?? 0);
	}

	async meta(generationId: string): Promise<GenerationMeta | undefined> {
		await this.#ready();
		const raw = await this.#redis.get(keysOf(this.#opts.keyPrefix, generationId).meta);
		return raw === null ? undefined : (JSON.parse(raw) as GenerationMeta);
	}

	async read(generationId: string, afterSeq: number): Promise<GenerationEvent[]> {
		await this.#ready();
		const entries = await this.#redis.xrange(keysOf(this.#opts.keyPrefix, generationId).stream, streamId(afterOf(afterSeq) + 1), "+");
		return entries.map(decode);
	}

	subscribe(generationId: string, afterSeq: number, onEvent: (e: GenerationEvent) => void, onEnd?: () => void, onError?: (err: Error) => void): Unsubscribe {
		const callbacks = { onEvent, onEnd, onError };
		if (this.#closed) return failedSubscription(new Error("generation log is closed"), callbacks, this.#logger);
		return this.#reader.subscribe(generationId, keysOf(this.#opts.keyPrefix, generationId), afterSeq, callbacks);
	}

	async close(): Promise<void> {
		if (this.#closed) return;
		this.#closed = true;
		await this.#reader.close();
		// The command connection may finish what it was sent (writers' last batches), briefly.
		let timer: NodeJS.Timeout | undefined;
		await Promise.race([
			this.#redis.quit().catch(noop),
			new Promise(resolve => {
				timer = setTimeout(resolve, QUIT_GRACE_MS);
			})
		]);
		clearTimeout(timer);
		this.#redis.disconnect();
	}

	/** Logs a connection's failure once per outage (ioredis keeps reconnecting on its own). */
	#watch(client: Redis, which: "redis" | "reader"): void {
		client.on("error", (err: Error) => {
			if (this.#outage[which] || this.#closed) return;
			this.#outage[which] = true;
			this.#logger?.warn(`Generation log: Redis ${which === "reader" ? "reader " : ""}connection failed; retrying`, err);
		});
		client.on("ready", () => {
			this.#outage[which] = false;
		});
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
}
