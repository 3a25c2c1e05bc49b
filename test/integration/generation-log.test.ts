import crypto from "node:crypto";
import { setImmediate as yieldToLoop, setTimeout as sleep } from "node:timers/promises";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createGenerationLog } from "../../lib/generations/create";
import { GenerationNotFoundError, type GenerationLog, type GenerationLogOptions, type GenerationWriter } from "../../lib/generations/log";
import type { GenerationEvent, GenerationEventInput } from "../../lib/chat-protocol";
import { TEST_REDIS_URL } from "../helpers/infra";

// The generation log against both stores: the same behaviour suite runs on the memory log and on
// the Redis Streams log (real Redis), then the Redis log's cluster behaviour: several logs as
// several nodes, one reader connection per node, prompt pickup of new subscribers, prompt close.
// Every key of this file starts with `prefix`; connection names too, so CLIENT LIST can count ours.
const prefix = `t-genlog-${crypto.randomBytes(4).toString("hex")}`;
const BASE: GenerationLogOptions = { keyPrefix: prefix, maxEvents: 20_000, ttlS: 3600, runningTtlS: 86_400 };

type Kind = "memory" | "redis";

let admin: Redis;
let opened: GenerationLog[] = [];
let names = 0;

beforeAll(async () => {
	admin = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1, lazyConnect: true });
	admin.on("error", () => {});
	await admin.connect();
});
afterEach(async () => {
	await Promise.all(opened.map(log => log.close()));
	opened = [];
});
afterAll(async () => {
	let cursor = "0";
	do {
		const [next, keys] = await admin.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
		if (keys.length) await admin.del(...keys);
		cursor = next;
	} while (cursor !== "0");
	await admin.quit();
});

/** A logger that keeps what it is told. */
function recordingLogger() {
	const warnings: unknown[][] = [];
	const errors: unknown[][] = [];
	return { warnings, errors, warn: (...a: unknown[]) => void warnings.push(a), error: (...a: unknown[]) => void errors.push(a) };
}

function openLog(kind: Kind, overrides: Partial<GenerationLogOptions> = {}, logger = recordingLogger(), readerBlockMs?: number) {
	const connectionName = `${prefix}-node${++names}`;
	const log = createGenerationLog({
		...BASE,
		...overrides,
		logger,
		...(kind === "redis" ? { redis: { url: TEST_REDIS_URL, connectionName, readerBlockMs } } : {})
	});
	opened.push(log);
	return { log, connectionName, logger };
}

const newId = () => crypto.randomUUID();
const metaOf = (generationId: string) => ({ generationId, ownerId: "user-1", conversationId: "conv-1", messageId: `msg-${generationId}` });
/** A chunk that names the seq it should get, so order and content are checked together. */
const chunk = (seq: number): GenerationEventInput => ({ type: "chunk", delta: `tok-${seq}` });
const done = (): GenerationEventInput => ({
	type: "done",
	messageId: "msg",
	status: "completed",
	usage: { promptTokens: 3, completionTokens: 5 },
	finishReason: "stop"
});
const streamKey = (id: string) => `${prefix}:gen:${id}`;

interface Collected {
	events: GenerationEvent[];
	ends: number;
	errors: Error[];
	/** Settles at onEnd (resolves) or onError (rejects). */
	finished: Promise<void>;
	unsubscribe: () => void;
}

function collect(log: GenerationLog, generationId: string, afterSeq: number, onEvent?: (e: GenerationEvent) => void): Collected {
	const { promise: finished, resolve, reject } = Promise.withResolvers<void>();
	// Rejections are read through `finished` by the tests that expect them.
	finished.catch(() => {});
	const c: Collected = { events: [], ends: 0, errors: [], finished, unsubscribe: () => {} };
	c.unsubscribe = log.subscribe(
		generationId,
		afterSeq,
		e => {
			c.events.push(e);
			onEvent?.(e);
		},
		() => {
			c.ends += 1;
			resolve();
		},
		err => {
			c.errors.push(err);
			reject(err);
		}
	);
	return c;
}

/** Exactly the seqs from..to, in order, each with its own content, the last one terminal. */
function expectRange(events: GenerationEvent[], from: number, to: number, terminal = true): void {
	const seqs = events.map(e => e.seq);
	expect(seqs).toEqual(Array.from({ length: to - from + 1 }, (_, i) => from + i));
	for (const e of events) if (e.type === "chunk") expect(e.delta).toBe(`tok-${e.seq}`);
	if (terminal) expect(events.at(-1)?.type).toBe("done");
}

interface ProduceOptions {
	/** Yield to the event loop every this many appends: a fast producer that still lets I/O through. */
	every?: number;
	/** Wait this long instead of yielding (a timer, so I/O gets a turn whatever the loop does). */
	pauseMs?: number;
	/** Seqs already appended before. */
	after?: number;
	/** Called right after each append, e.g. to subscribe at an exact point mid-stream. */
	onAppended?: (seq: number) => void;
}

/** Appends `chunks` chunks then the terminal event; resolves with the last seq once flushed. */
function produce(writer: GenerationWriter, chunks: number, { every = 3, pauseMs, after = 0, onAppended }: ProduceOptions = {}) {
	const progress = { seq: after };
	const finished = (async () => {
		for (let i = 1; i <= chunks; i++) {
			progress.seq = writer.append(chunk(progress.seq + 1));
			onAppended?.(progress.seq);
			if (i % every === 0) await (pauseMs === undefined ? yieldToLoop() : sleep(pauseMs));
		}
		progress.seq = writer.append(done());
		await writer.flush();
		return progress.seq;
	})();
	return { progress, finished };
}

async function until(check: () => boolean | Promise<boolean>, timeoutMs = 5000, stepMs = 5): Promise<number> {
	const start = performance.now();
	while (!(await check())) {
		if (performance.now() - start > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`);
		await sleep(stepMs);
	}
	return performance.now() - start;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];

describe.each<Kind>(["memory", "redis"])("generation log (%s)", kind => {
	it("numbers appends 1, 2, 3 … and reads them back in order after any seq", async () => {
		const { log } = openLog(kind);
		const id = newId();
		const writer = await log.create(metaOf(id));
		expect(writer.generationId).toBe(id);
		const seqs = [writer.append(chunk(1)), writer.append(chunk(2)), writer.append(chunk(3)), writer.append(done())];
		expect(seqs).toEqual([1, 2, 3, 4]);
		await writer.flush();
		expectRange(await log.read(id, 0), 1, 4);
		expectRange(await log.read(id, 2), 3, 4);
		expect(await log.read(id, 4)).toEqual([]);
		expect(await log.read(newId(), 0)).toEqual([]);
		expect((await log.read(id, 0))[3]).toEqual({ seq: 4, ...done() });
	});

	it("gives a subscriber from 0 every event exactly once, in order, while they are still being appended, then onEnd", async () => {
		const { log } = openLog(kind);
		const id = newId();
		let c: Collected | undefined;
		const { finished } = produce(await log.create(metaOf(id)), 400, {
			onAppended: seq => {
				if (seq === 60) c = collect(log, id, 0);
			}
		});
		const last = await finished;
		if (!c) throw new Error("never subscribed");
		await c.finished;
		expectRange(c.events, 1, last);
		await sleep(30);
		expect(c.ends).toBe(1);
		expect(c.events).toHaveLength(last);
	});

	it("resumes from seq k mid-stream with exactly seq > k: no gap or duplicate where replay meets live", async () => {
		const { log } = openLog(kind);
		for (let round = 0; round < 5; round++) {
			const id = newId();
			const writer = await log.create(metaOf(id));
			// Subscribe at k, where the newest events are appended but (in Redis) maybe not stored yet, and
			// again at whatever was appended once the first k are surely stored; the boundary moves each round.
			const k = 80 + round * 37;
			const subs: Array<{ after: number; c: Collected }> = [];
			const subscribe = (after: number) => subs.push({ after, c: collect(log, id, after) });
			const { progress, finished } = produce(writer, 500, {
				every: 5,
				pauseMs: 0,
				onAppended: seq => {
					if (seq !== k) return;
					// Ahead of the log first: a new stream's reader must still start where the log is, not there.
					for (const after of [k + 3, k, k - 1, k - 25]) subscribe(after);
					void writer.flush().then(() => subscribe(progress.seq));
				}
			});
			const last = await finished;
			expect(subs).toHaveLength(5);
			expect(subs[4].after).toBeGreaterThanOrEqual(k);
			expect(subs[4].after).toBeLessThan(last);
			await Promise.all(subs.map(s => s.c.finished));
			for (const { after, c } of subs) expectRange(c.events, after + 1, last);
		}
	});

	it("serves many subscribers of one generation, each from its own seq", async () => {
		const { log } = openLog(kind);
		const id = newId();
		const writer = await log.create(metaOf(id));
		const subs: Array<{ from: number; c: Collected }> = [];
		const { finished } = produce(writer, 300, {
			every: 4,
			onAppended: seq => {
				if (seq % 8 !== 0 || subs.length >= 30) return;
				const from = subs.length % 3 === 0 ? 0 : seq - (subs.length % 7);
				subs.push({ from, c: collect(log, id, from) });
			}
		});
		const last = await finished;
		expect(subs).toHaveLength(30);
		await Promise.all(subs.map(s => s.c.finished));
		for (const { from, c } of subs) expectRange(c.events, from + 1, last);
	});

	it("replays a finished generation and ends, also when the subscriber has it all already", async () => {
		const { log } = openLog(kind);
		const id = newId();
		const writer = await log.create(metaOf(id));
		for (let i = 1; i <= 20; i++) writer.append(chunk(i));
		writer.append(done());
		await writer.flush();

		const all = collect(log, id, 0);
		const tail = collect(log, id, 10);
		const none = collect(log, id, 21);
		const beyond = collect(log, id, 50);
		await Promise.all([all.finished, tail.finished, none.finished, beyond.finished]);
		expectRange(all.events, 1, 21);
		expectRange(tail.events, 11, 21);
		expect(none.events).toEqual([]);
		expect(beyond.events).toEqual([]);
		expect([all.ends, tail.ends, none.ends, beyond.ends]).toEqual([1, 1, 1, 1]);

		const missing = collect(log, newId(), 0);
		await expect(missing.finished).rejects.toBeInstanceOf(GenerationNotFoundError);
		expect(missing.ends).toBe(0);
	});

	it("delivers nothing more after unsubscribe, while other subscribers go on", async () => {
		const { log } = openLog(kind);
		const id = newId();
		const writer = await log.create(metaOf(id));
		const leaving = collect(log, id, 0);
		const staying = collect(log, id, 0);
		for (let i = 1; i <= 10; i++) writer.append(chunk(i));
		await writer.flush();
		await until(() => leaving.events.length === 10);
		leaving.unsubscribe();
		for (let i = 11; i <= 20; i++) writer.append(chunk(i));
		writer.append(done());
		await writer.flush();
		await staying.finished;
		await sleep(50);
		expectRange(staying.events, 1, 21);
		expectRange(leaving.events, 1, 10, false);
		expect(leaving.ends).toBe(0);
		leaving.unsubscribe();
	});

	it("keeps the meta: running until the terminal event, then finished; one writer per generation", async () => {
		const { log } = openLog(kind);
		const id = newId();
		expect(await log.meta(id)).toBeUndefined();
		const writer = await log.create(metaOf(id));
		expect(await log.meta(id)).toEqual({ ...metaOf(id), state: "running" });
		await expect(log.create(metaOf(id))).rejects.toThrow(/exists/);
		writer.append(chunk(1));
		await writer.flush();
		expect((await log.meta(id))?.state).toBe("running");
		writer.append(done());
		expect(() => writer.append(chunk(3))).toThrow(/ended/);
		await writer.flush();
		expect(await log.meta(id)).toEqual({ ...metaOf(id), state: "finished" });
		expectRange(await log.read(id, 0), 1, 2);
	});

	it("lets a new writer adopt a generation whose writer is gone, going on after its last event, and never an ended one", async () => {
		const { log } = openLog(kind);
		const id = newId();
		expect(await log.adopt(id)).toBeUndefined();
		const first = await log.create(metaOf(id));
		for (let seq = 1; seq <= 3; seq++) first.append(chunk(seq));
		await first.flush();
		const watcher = collect(log, id, 0);
		// The first writer is abandoned here, as by a process that died.
		const adopted = await log.adopt(id);
		if (!adopted) throw new Error("not adopted");
		expect(adopted.append(done())).toBe(4);
		await adopted.flush();
		await watcher.finished;
		expect(watcher.events.map(e => e.seq)).toEqual([1, 2, 3, 4]);
		expect(watcher.events.at(-1)?.type).toBe("done");
		expect((await log.meta(id))?.state).toBe("finished");
		expect(await log.adopt(id)).toBeUndefined();
	});

	it("keeps at most about maxEvents events, dropping the oldest; a replay from before them starts at the oldest kept", async () => {
		const maxEvents = 100;
		const { log } = openLog(kind, { maxEvents });
		const id = newId();
		const writer = await log.create(metaOf(id));
		for (let i = 1; i <= 1000; i++) writer.append(chunk(i));
		writer.append(done());
		await writer.flush();
		const kept = await log.read(id, 0);
		// Redis trims with MAXLEN ~: whole nodes of 100 entries (stream-node-max-entries), so up to one node more.
		if (kind === "memory") expect(kept).toHaveLength(maxEvents);
		else {
			expect(kept.length).toBeGreaterThanOrEqual(maxEvents);
			expect(kept.length).toBeLessThanOrEqual(maxEvents + 100);
		}
		const first = kept[0].seq;
		expect(first).toBeGreaterThan(1);
		expectRange(kept, first, 1001);
		expectRange(await log.read(id, 5), first, 1001);
		expectRange(await log.read(id, 990), 991, 1001);
		const c = collect(log, id, 3);
		await c.finished;
		expectRange(c.events, first, 1001);
	});

	it("drops a generation ttlS after it finished, and not a running one", async () => {
		const { log } = openLog(kind, { ttlS: 1, runningTtlS: 30 });
		const finishedId = newId();
		const runningId = newId();
		const running = await log.create(metaOf(runningId));
		running.append(chunk(1));
		await running.flush();
		const writer = await log.create(metaOf(finishedId));
		writer.append(chunk(1));
		writer.append(done());
		await writer.flush();
		expect((await log.meta(finishedId))?.state).toBe("finished");
		// Kept for its ttl after it finished: a late watcher still reads it whole.
		expect((await log.read(finishedId, 0)).map(e => e.type)).toEqual(["chunk", "done"]);
		if (kind === "redis") {
			const ttlMs = await admin.pttl(streamKey(finishedId));
			expect(ttlMs).toBeGreaterThan(0);
			expect(ttlMs).toBeLessThanOrEqual(1000);
			expect(await admin.ttl(streamKey(runningId))).toBeGreaterThan(20);
			expect(await admin.ttl(`${streamKey(runningId)}:meta`)).toBeGreaterThan(20);
		}

		await until(async () => (await log.meta(finishedId)) === undefined, 4000, 50);
		expect(await log.read(finishedId, 0)).toEqual([]);
		if (kind === "redis") expect(await admin.exists(streamKey(finishedId), `${streamKey(finishedId)}:meta`)).toBe(0);
		await expect(collect(log, finishedId, 0).finished).rejects.toBeInstanceOf(GenerationNotFoundError);

		expect((await log.meta(runningId))?.state).toBe("running");
		expectRange(await log.read(runningId, 0), 1, 1, false);
	});
});

describe("generation log (redis): a cluster of nodes", () => {
	it("does not throw into append when Redis refuses the events; flush rejects, one error is logged, and a later flush stores them", async () => {
		const { log, logger } = openLog("redis");
		const id = newId();
		const writer = await log.create(metaOf(id));
		// A key of the wrong type makes every XADD fail.
		await admin.set(streamKey(id), "not a stream");
		for (let i = 1; i <= 5; i++) expect(writer.append(chunk(i))).toBe(i);
		await expect(writer.flush()).rejects.toThrow(/WRONGTYPE/);
		for (let i = 6; i <= 8; i++) writer.append(chunk(i));
		await expect(writer.flush()).rejects.toThrow(/WRONGTYPE/);
		expect(logger.errors).toHaveLength(1);

		await admin.del(streamKey(id));
		writer.append(done());
		await writer.flush();
		expectRange(await log.read(id, 0), 1, 9);
		expect((await log.meta(id))?.state).toBe("finished");
	});

	it("delivers live from a writer on node A to subscribers on node B", async () => {
		const a = openLog("redis").log;
		const b = openLog("redis").log;
		const id = newId();
		const writer = await a.create(metaOf(id));
		const subs = Array.from({ length: 5 }, () => collect(b, id, 0));
		const { finished } = produce(writer, 200, { every: 1 });
		const last = await finished;
		await Promise.all(subs.map(s => s.finished));
		for (const s of subs) expectRange(s.events, 1, last);
		expect((await b.meta(id))?.state).toBe("finished");
	});

	it("reads 50 subscriptions across 10 generations on one reader connection, and lets go of streams nobody follows", async () => {
		const a = openLog("redis").log;
		const { log: b, connectionName } = openLog("redis");
		const ids = Array.from({ length: 10 }, newId);
		const writers = await Promise.all(ids.map(id => a.create(metaOf(id))));
		for (const w of writers) w.append(chunk(1));
		await Promise.all(writers.map(w => w.flush()));
		const subs = ids.flatMap(id => Array.from({ length: 5 }, () => ({ id, c: collect(b, id, 0) })));
		await until(() => subs.every(s => s.c.events.length === 1));

		const clients = await clientsNamed(connectionName);
		expect(clients.filter(c => c.name === `${connectionName}:reader`)).toHaveLength(1);
		expect(clients.filter(c => c.name === `${connectionName}:cmd`)).toHaveLength(1);
		expect(clients).toHaveLength(2);
		// The one reader waits in XREAD BLOCK for all of them.
		await until(async () => (await clientsNamed(connectionName)).some(c => c.name.endsWith(":reader") && c.blocked), 3000);

		const runs = writers.map(w => produce(w, 50, { every: 1, after: 1 }));
		const lasts = await Promise.all(runs.map(r => r.finished));
		await Promise.all(subs.map(s => s.c.finished));
		for (const s of subs) expectRange(s.c.events, 1, lasts[0]);
		expect(await clientsNamed(connectionName)).toHaveLength(2);

		// Everything ended, so no stream is followed: the reader stops blocking (after at most one block timeout).
		await until(async () => !(await clientsNamed(connectionName)).some(c => c.blocked), 3000, 50);
	});

	it("delivers to a subscriber added while the reader is blocked without waiting for the block timeout", async () => {
		const a = openLog("redis").log;
		const { log: b, connectionName } = openLog("redis");
		// An idle subscription keeps B's reader blocked.
		const idleId = newId();
		await a.create(metaOf(idleId));
		collect(b, idleId, 0);
		const latencies: number[] = [];
		const replays: number[] = [];
		const unblocksBefore = await unblockCalls();
		for (let i = 0; i < 9; i++) {
			await until(async () => (await clientsNamed(connectionName)).some(c => c.name.endsWith(":reader") && c.blocked), 3000);
			const id = newId();
			const writer = await a.create(metaOf(id));
			writer.append(chunk(1));
			await writer.flush();
			let t0 = 0;
			const subscribedAt = performance.now();
			const got = new Promise<void>(resolve => {
				collect(b, id, 0, e => {
					if (e.seq === 1) {
						// Replayed: the stream joins the reader now; a new event has to come through it.
						replays.push(performance.now() - subscribedAt);
						t0 = performance.now();
						writer.append(chunk(2));
					} else if (e.seq === 2) {
						latencies.push(performance.now() - t0);
						resolve();
					}
				});
			});
			await got;
		}
		console.info(`new subscriber while blocked: replay ${fmt(replays)}; first live event ${fmt(latencies)}`);
		// Not waited out: each subscriber joined by waking the blocked reader (CLIENT UNBLOCK).
		expect((await unblockCalls()) - unblocksBefore).toBeGreaterThanOrEqual(9);
	});

	it("closes at once while its reader is blocked, without waiting out the block, and delivers nothing after", async () => {
		const a = openLog("redis").log;
		// A block far longer than the bound below: waiting it out (QUIT behind the XREAD) would fail.
		const { log: b, connectionName } = openLog("redis", {}, recordingLogger(), 30_000);
		const id = newId();
		const writer = await a.create(metaOf(id));
		const c = collect(b, id, 0);
		writer.append(chunk(1));
		await until(() => c.events.length === 1);
		await until(async () => (await clientsNamed(connectionName)).some(x => x.blocked), 3000);
		const closing = b.close();
		// Its connections leave Redis while the 30 s block is still pending: the reader's socket is
		// dropped, where a QUIT would wait behind the blocked XREAD until the block ran out.
		await until(async () => (await clientsNamed(connectionName)).length === 0, 5000, 20);
		await closing;
		writer.append(chunk(2));
		await writer.flush();
		await sleep(50);
		expect(c.events).toHaveLength(1);
	});
});

interface ClientInfo {
	name: string;
	blocked: boolean;
}

/** This file's connections whose CLIENT SETNAME starts with `name`. */
async function clientsNamed(name: string): Promise<ClientInfo[]> {
	const list = String(await admin.client("LIST"));
	return list
		.split("\n")
		.map(line => ({ name: / name=(\S*)/.exec(line)?.[1] ?? "", flags: / flags=(\S*)/.exec(line)?.[1] ?? "" }))
		.filter(c => c.name.startsWith(`${name}:`))
		.map(c => ({ name: c.name, blocked: c.flags.includes("b") }));
}

/** CLIENT UNBLOCK calls the Redis server has taken so far (its command statistics). */
async function unblockCalls(): Promise<number> {
	const stats = String(await admin.info("commandstats"));
	return Number(/cmdstat_client\|unblock:calls=(\d+)/.exec(stats)?.[1] ?? 0);
}

function fmt(ms: number[]): string {
	return `median ${median(ms).toFixed(2)} ms, p95 ${percentile(ms, 0.95).toFixed(2)} ms, max ${Math.max(...ms).toFixed(2)} ms (n=${ms.length})`;
}
