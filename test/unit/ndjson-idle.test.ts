import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import type { LlmStreamLine } from "../../lib/chat-protocol";
import { readLineBatches } from "../../services/llm/ndjson";

const line = (l: LlmStreamLine) => `${JSON.stringify(l)}\n`;

describe("reading an llm stream with an idle bound", () => {
	it("gives up on a stream that goes silent without closing, and destroys it", async () => {
		const stream = new PassThrough({ objectMode: true });
		const seen: LlmStreamLine[] = [];
		const read = readLineBatches(stream, lines => seen.push(...lines), { idleMs: 100 });
		stream.write(line({ type: "delta", content: "Hello" }));
		await expect(read).rejects.toThrow(/sent nothing for 100 ms/);
		expect(seen).toEqual([{ type: "delta", content: "Hello" }]);
		expect(stream.destroyed).toBe(true);
	});

	it("reads a stream to its end while chunks keep coming within the bound", async () => {
		const stream = new PassThrough({ objectMode: true });
		const seen: LlmStreamLine[] = [];
		const read = readLineBatches(stream, lines => seen.push(...lines), { idleMs: 1000 });
		for (let i = 0; i < 5; i++) {
			stream.write(line({ type: "delta", content: String(i) }));
			await new Promise(r => setTimeout(r, 10));
		}
		stream.end(line({ type: "end", finishReason: "stop", usage: { promptTokens: 1, completionTokens: 5 }, usageSource: "provider" }));
		await expect(read).resolves.toBeUndefined();
		expect(seen.map(l => l.type)).toEqual(["delta", "delta", "delta", "delta", "delta", "end"]);
	});
});
