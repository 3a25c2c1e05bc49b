import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { createGenerationLog } from "../../lib/generations/create";
import { decode, decodeOrSkip, keysOf, repliesOf, seqOf, streamId } from "../../lib/generations/redis-stream";
import { TEST_REDIS_URL, uniqueNamespace } from "../helpers/infra";

// The Redis generation log's stream layout, shared by its writer and its reader: entry IDs are
// seqs, one JSON field per entry; and the reader's policy for an entry it cannot read (skip it,
// log it, go on), against the real local Redis.

describe("the stream layout", () => {
	it("keys a generation under the prefix, and makes a seq its own entry ID", () => {
		expect(keysOf("ns", "g1")).toEqual({ stream: "ns:gen:g1", meta: "ns:gen:g1:meta" });
		expect(streamId(42)).toBe("0-42");
		expect(seqOf(streamId(42))).toBe(42);
	});

	it("decodes an entry into its event, and refuses one without the event field", () => {
		expect(decode(["0-3", ["e", JSON.stringify({ type: "chunk", delta: "hi" })]])).toEqual({ seq: 3, type: "chunk", delta: "hi" });
		expect(() => decode(["0-4", ["other", "{}"]])).toThrow(/no "e" field/);
	});

	it("skips an unreadable entry with a logged error instead of throwing", () => {
		const logger = { warn: vi.fn(), error: vi.fn() };
		expect(decodeOrSkip(["0-5", ["e", "{broken"]], "g1", logger)).toBeUndefined();
		expect(logger.error).toHaveBeenCalledWith("Generation log: skipping an unreadable entry", expect.objectContaining({ generationId: "g1" }));
	});

	it("hands out a pipeline's replies, or throws its first error unless accepted", () => {
		const refused = new Error("ERR equal or smaller than the target stream top item");
		expect(
			repliesOf([
				[null, "OK"],
				[null, 1]
			])
		).toEqual(["OK", 1]);
		expect(() =>
			repliesOf([
				[null, "OK"],
				[refused, null]
			])
		).toThrow(refused);
		expect(repliesOf([[refused, null]], err => err === refused)).toEqual([null]);
		expect(() => repliesOf(null)).toThrow(/discarded/);
	});
});

describe("the reader and an unreadable entry (real Redis)", () => {
	const prefix = uniqueNamespace("genlog-unit");
	let admin: Redis;

	beforeAll(async () => {
		admin = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 });
	});
	afterAll(async () => {
		const keys = await admin.keys(`${prefix}:*`);
		if (keys.length > 0) await admin.del(...keys);
		await admin.quit();
	});

	it("skips it in the replay and live, delivering the entries around it", async () => {
		const logger = { warn: vi.fn(), error: vi.fn() };
		const log = createGenerationLog({
			keyPrefix: prefix,
			maxEvents: 1000,
			ttlS: 60,
			runningTtlS: 600,
			logger,
			redis: { url: TEST_REDIS_URL, connectionName: prefix }
		});
		try {
			const writer = await log.create({ generationId: "g", ownerId: "u", conversationId: null, messageId: "m" });
			writer.append({ type: "chunk", delta: "a" });
			await writer.flush();
			const { stream } = keysOf(prefix, "g");
			// Seq 2 is written by someone else, in a shape the log cannot read.
			await admin.xadd(stream, streamId(2), "x", "not an event");
			const seqs: number[] = [];
			const ended = new Promise<void>((resolve, reject) => log.subscribe("g", 0, e => seqs.push(e.seq), resolve, reject));
			await vi.waitFor(() => expect(seqs).toEqual([1]));
			await admin.xadd(stream, streamId(3), "x", "not an event either");
			await admin.xadd(stream, streamId(4), "e", JSON.stringify({ type: "chunk", delta: "d" }));
			await admin.xadd(
				stream,
				streamId(5),
				"e",
				JSON.stringify({ type: "done", messageId: "m", status: "completed", usage: { promptTokens: 1, completionTokens: 1 } })
			);
			await ended;
			expect(seqs).toEqual([1, 4, 5]);
			expect(logger.error).toHaveBeenCalledTimes(2);
		} finally {
			await log.close();
		}
	});
});
