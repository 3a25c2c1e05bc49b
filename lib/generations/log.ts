/**
 * The generation log: every event of a streamed answer, numbered 1, 2, 3 … by its one writer
 * (the turn owner), kept for a while so that a client on any gateway node can follow it live or
 * resume it after a reconnect ("everything after seq N") with no gap and no duplicate.
 *
 * This file holds the interfaces and errors; two stores implement them, memory for one embedded
 * process and Redis Streams for a cluster (memory-log.ts, redis-log.ts over redis-writer.ts and
 * redis-reader.ts), both delivering to subscribers through subscriber.ts, and create.ts picks one.
 */
import type { GenerationEvent, GenerationEventInput, GenerationMeta } from "../chat-protocol";

export interface GenerationLogOptions {
	/** Prefix of every key, e.g. `${namespace}`, so clusters and test files never share generations. */
	keyPrefix: string;
	/** Events kept per generation (e.g. 20000); the oldest are dropped beyond it. */
	maxEvents: number;
	/** How long a finished generation stays replayable, in seconds (e.g. 3600). */
	ttlS: number;
	/** Safety expiry of a generation that never finishes (its writer died), in seconds (e.g. 86400). */
	runningTtlS: number;
}

export interface GenerationWriter {
	readonly generationId: string;
	/**
	 * Appends in call order; returns the seq it assigned (1, 2, 3 …). Does not wait for the store:
	 * events are written in order in the background, and a store failure never throws here (it is
	 * logged and `flush()` rejects). Throws only when called after the terminal event.
	 */
	append(event: GenerationEventInput): number;
	/** Resolves when everything appended so far is stored; the terminal event also marks the meta finished and shortens the expiry to ttlS. */
	flush(): Promise<void>;
}

export type Unsubscribe = () => void;

export interface GenerationLog {
	/** Starts a generation: stores its meta (state "running"). Exactly one writer per generation: rejects when it exists already. */
	create(meta: Omit<GenerationMeta, "state">): Promise<GenerationWriter>;
	/**
	 * Takes over the writing of a generation whose writer is gone (its process died): a writer
	 * that goes on after the last stored event. Undefined when the generation does not exist (any
	 * more) or has ended. The caller must know the old writer is dead (see the turn leases).
	 */
	adopt(generationId: string): Promise<GenerationWriter | undefined>;
	meta(generationId: string): Promise<GenerationMeta | undefined>;
	/** Events with seq > afterSeq currently stored, in order. */
	read(generationId: string, afterSeq: number): Promise<GenerationEvent[]>;
	/**
	 * Replay (seq > afterSeq) then live, in order, no gaps or duplicates; calls onEnd after
	 * delivering the terminal event (or immediately after replay if the log already ends with it).
	 * Callbacks run asynchronously, never before this returns. Never throws into the caller; store
	 * errors go to onError if given, and so does `GenerationNotFoundError` when the generation has
	 * neither meta nor events (never created, or expired). After onEnd or onError nothing more is
	 * delivered; unsubscribing then is a no-op.
	 *
	 * When older events were dropped by `maxEvents`, a replay from before them starts at the oldest
	 * event kept.
	 */
	subscribe(generationId: string, afterSeq: number, onEvent: (e: GenerationEvent) => void, onEnd?: () => void, onError?: (err: Error) => void): Unsubscribe;
	/** Stops live delivery and releases timers and connections; writers should be flushed before. */
	close(): Promise<void>;
}

export interface GenerationLogLogger {
	warn(...a: unknown[]): void;
	error(...a: unknown[]): void;
}

export interface RedisGenerationLogConnection {
	url: string;
	/** CLIENT SETNAME of the two connections: `${connectionName}:cmd` and `${connectionName}:reader`. */
	connectionName?: string;
	/**
	 * How long the reader's XREAD blocks when no stream has news (default 1000 ms). New streams never
	 * wait for it (CLIENT UNBLOCK wakes the reader), so it only sets an idle reader's round trips.
	 */
	readerBlockMs?: number;
}

export type CreateGenerationLogOptions = GenerationLogOptions & { redis?: RedisGenerationLogConnection; logger?: GenerationLogLogger };

/** Given to onError by `subscribe` when a generation does not exist (any more). */
export class GenerationNotFoundError extends Error {
	constructor(readonly generationId: string) {
		super(`generation ${generationId} not found`);
		this.name = "GenerationNotFoundError";
	}
}
