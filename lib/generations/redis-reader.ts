/**
 * The reading half of the Redis generation log: a single `XREAD BLOCK` loop per node, on its own
 * connection, over every generation with local subscribers, however many subscribers there are. A
 * subscriber is first replayed with XRANGE on the command connection while the loop goes on; the
 * loop then continues each stream from a per-stream cursor, and each subscriber from its own (see
 * Subscription), so that replay and live meet with no gap and no duplicate.
 *
 * A stream that joins the loop while its XREAD is blocked would otherwise wait for the block
 * timeout: the loop is interrupted with `CLIENT UNBLOCK <reader id> TIMEOUT` from the command
 * connection, and the next XREAD includes it. Where CLIENT UNBLOCK is not allowed (ACLs, some
 * managed Redis offerings; probed before the first XREAD), the block timeout drops to
 * FALLBACK_BLOCK_MS instead.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Redis } from "ioredis";
import { type GenerationEvent, isTerminal } from "../chat-protocol";
import { outsideRequests } from "../request-context";
import { GenerationNotFoundError, type GenerationLogLogger, type Unsubscribe } from "./log";
import { asError, decode, decodeOrSkip, type Entry, type Keys, noop, repliesOf, seqOf, streamId } from "./redis-stream";
import { type SubscriberCallbacks, Subscription } from "./subscriber";

/** With CLIENT UNBLOCK a new stream never waits for the timeout; it only bounds an idle loop's round trips. */
const DEFAULT_BLOCK_MS = 1000;
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
const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 2000;

/** One stream the reader follows for the subscribers of this node. */
interface Channel {
	generationId: string;
	keys: Keys;
	/** The last seq the reader has read; undefined until a replay found the stream's top, and the reader leaves the stream out until then. */
	cursor: number | undefined;
	subscribers: Set<Subscription>;
}

function isTerminalEntry(entry: Entry): boolean {
	try {
		return isTerminal(decode(entry));
	} catch {
		return false;
	}
}

export class RedisStreamReader {
	/** By stream key. */
	readonly #channels = new Map<string, Channel>();
	readonly #stopped = new AbortController();
	#closed = false;
	#loop?: Promise<void>;
	/** The XREAD in flight. */
	#read?: Promise<unknown>;
	/** A stream joined the loop after the XREAD in flight was sent. */
	#readStale = false;
	#wakeIdle?: () => void;
	#unblocking = false;
	#blockMs: number;
	#unblockProbed = false;
	/** CLIENT ID of the reader's connection, for CLIENT UNBLOCK; a reconnection changes it. */
	#readerId?: number;

	/**
	 * `commands`: the node's command connection (replays, CLIENT UNBLOCK); `reader`: the loop's own
	 * connection, which XREAD BLOCK holds, so nothing else may use it.
	 */
	constructor(
		private readonly commands: Redis,
		private readonly reader: Redis,
		private readonly ready: () => Promise<void>,
		private readonly logger?: GenerationLogLogger,
		blockMs = DEFAULT_BLOCK_MS
	) {
		this.#blockMs = blockMs;
		reader.on("close", () => {
			this.#readerId = undefined;
		});
	}

	subscribe(generationId: string, keys: Keys, afterSeq: number, callbacks: SubscriberCallbacks): Unsubscribe {
		let channel = this.#channels.get(keys.stream);
		if (!channel) {
			channel = { generationId, keys, cursor: undefined, subscribers: new Set() };
			this.#channels.set(keys.stream, channel);
		}
		const joined = channel;
		const sub = new Subscription(afterSeq, callbacks, this.logger, () => this.#leave(joined, sub));
		joined.subscribers.add(sub);
		void this.#replay(joined, sub);
		return () => sub.cancel();
	}

	/** Stops the loop at once (its connection is dropped) and ends every subscription silently. */
	async close(): Promise<void> {
		if (this.#closed) return;
		this.#closed = true;
		this.#stopped.abort();
		this.#wakeIdle?.();
		for (const channel of this.#channels.values()) for (const sub of channel.subscribers) sub.cancel();
		this.#channels.clear();
		// QUIT would queue behind the blocked XREAD: drop the reader's socket at once.
		this.reader.disconnect();
		await this.#loop;
	}

	/**
	 * Replays the stored events after the subscriber's cursor. The stream's top entry, read just
	 * before, is where the reader starts when this stream is new to it: the replay covers up to at
	 * least that entry, the reader everything after it.
	 */
	async #replay(channel: Channel, sub: Subscription): Promise<void> {
		const { stream, meta } = channel.keys;
		let top: Entry | undefined;
		let entries: Entry[];
		let metaJson: string | null;
		try {
			await this.ready();
			const replies = repliesOf(
				await this.commands
					.pipeline()
					.xrevrange(stream, "+", "-", "COUNT", 1)
					.xrange(stream, streamId(sub.after + 1), "+")
					.get(meta)
					.exec()
			);
			top = (replies[0] as Entry[])[0];
			entries = replies[1] as Entry[];
			metaJson = replies[2] as string | null;
		} catch (err) {
			sub.fail(asError(err));
			return;
		}
		const joins = channel.cursor === undefined;
		if (joins) channel.cursor = top ? seqOf(top[0]) : 0;

		if (!top && entries.length === 0 && metaJson === null) sub.fail(new GenerationNotFoundError(channel.generationId));
		else sub.replayed(this.#events(channel, entries), top && isTerminalEntry(top) ? seqOf(top[0]) : undefined);
		if (joins && channel.subscribers.size > 0 && this.#channels.get(stream) === channel) this.#join();
	}

	*#events(channel: Channel, entries: Entry[]): Generator<GenerationEvent> {
		for (const entry of entries) {
			const event = decodeOrSkip(entry, channel.generationId, this.logger);
			if (event) yield event;
		}
	}

	/** The last subscriber of a stream takes it out of the loop (from its next XREAD on). */
	#leave(channel: Channel, sub: Subscription): void {
		channel.subscribers.delete(sub);
		if (channel.subscribers.size === 0 && this.#channels.get(channel.keys.stream) === channel) this.#channels.delete(channel.keys.stream);
	}

	/** A stream has joined: the loop must include it now, not after its current XREAD times out. */
	#join(): void {
		this.#readStale = true;
		// The node's one loop belongs to no request, whichever subscriber happened to start it.
		this.#loop ??= outsideRequests(() => this.#run());
		if (this.#wakeIdle) this.#wakeIdle();
		else if (this.#read) void this.#interrupt();
	}

	async #run(): Promise<void> {
		let failures = 0;
		while (!this.#closed) {
			try {
				this.#readerId ??= await this.reader.client("ID");
				if (!this.#unblockProbed) {
					// The reader is not blocked now, so this unblocks nothing: it only tells whether we may.
					this.#unblockProbed = true;
					await this.commands.client("UNBLOCK", this.#readerId, "TIMEOUT").catch((err: unknown) => this.#unblockDenied(err));
				}
				if (this.#closed) break;
				const live = [...this.#channels.values()].filter(c => c.cursor !== undefined && c.subscribers.size > 0);
				if (live.length === 0) {
					await new Promise<void>(resolve => {
						this.#wakeIdle = resolve;
					});
					this.#wakeIdle = undefined;
					continue;
				}
				const read = this.reader.xread(
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
				if (failures > 0) this.logger?.warn("Generation log: the reader reads again");
				failures = 0;
				if (reply) this.#dispatch(reply);
			} catch (err) {
				if (this.#closed) break;
				if (failures++ === 0) this.logger?.warn("Generation log: the reader's XREAD failed; retrying", err);
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
				const event = decodeOrSkip(entry, channel.generationId, this.logger);
				if (event) for (const sub of channel.subscribers) sub.push(event);
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
				const unblocked = await this.commands.client("UNBLOCK", id, "TIMEOUT");
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
		this.#blockMs = Math.min(this.#blockMs, FALLBACK_BLOCK_MS);
		this.logger?.warn(
			`Generation log: CLIENT UNBLOCK is not allowed; new subscriptions may wait a short block timeout (${FALLBACK_BLOCK_MS} ms, ~100 ms at Redis hz 10)`,
			err
		);
	}
}
