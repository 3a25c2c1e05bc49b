import { describe, expect, it } from "vitest";
import { defineTool, ToolRegistry, type ToolModule } from "../../services/tool/registry";
import { capOutput, runToolCall, type RunOptions } from "../../services/tool/runner";
import { BUILTIN_TOOLS } from "../../services/tool/tools";
import { currentTime } from "../../services/tool/tools/current-time";

const echo = defineTool<{ text: string; times: number }>({
	name: "echo",
	description: "Repeats text",
	parameters: {
		type: "object",
		properties: { text: { type: "string" }, times: { type: "integer", minimum: 1, default: 1 } },
		required: ["text"],
		additionalProperties: false
	},
	async run({ text, times }) {
		return text.repeat(times);
	}
});

const opts = (over: Partial<RunOptions> = {}): RunOptions => ({
	defaultTimeoutMs: 1000,
	maxOutputBytes: 1024,
	userId: "u1",
	call: async () => undefined,
	...over
});

describe("tool registry", () => {
	it("offers OpenAI function definitions", () => {
		const registry = new ToolRegistry([...BUILTIN_TOOLS, echo as ToolModule]);
		const defs = registry.definitions();
		expect(defs.map(d => d.function.name)).toEqual(["calculator", "current_time", "search_conversations", "echo"]);
		for (const d of defs) {
			expect(d.type).toBe("function");
			expect(d.function.description).toBeTruthy();
			expect(d.function.parameters).toMatchObject({ type: "object" });
		}
	});

	it("refuses bad names, duplicates and broken schemas when it is built", () => {
		expect(() => new ToolRegistry([{ ...echo, name: "has space" } as ToolModule])).toThrow(/tool name/);
		expect(() => new ToolRegistry([echo, echo] as ToolModule[])).toThrow(/registered twice/);
		const broken = { ...echo, parameters: { type: "object", properties: { x: { type: "strnig" } } } } as ToolModule;
		expect(() => new ToolRegistry([broken])).toThrow(/invalid parameters schema/);
		expect(() => new ToolRegistry([{ ...echo, timeoutMs: -1 } as ToolModule])).toThrow(/timeoutMs/);
	});
});

describe("runToolCall", () => {
	const registry = new ToolRegistry([echo as ToolModule]);

	it("validates against the schema, fills defaults and returns JSON text", async () => {
		const ok = await runToolCall(registry, { name: "echo", args: '{"text":"ab"}', toolCallId: "c1" }, opts());
		expect(ok.result).toMatchObject({ toolCallId: "c1", name: "echo", status: "success", output: '"ab"' });
		expect(JSON.parse(ok.inputJson)).toEqual({ text: "ab", times: 1 });
		expect(ok.outputJson).toBe('"ab"');

		const bad = await runToolCall(registry, { name: "echo", args: { text: 5, extra: true } }, opts());
		expect(bad.result.status).toBe("error");
		expect(bad.result.output).toMatch(/^invalid arguments: /);
		expect(bad.result.output).toMatch(/arguments\/text must be string/);
		expect(bad.result.output).toMatch(/additional properties/);

		const notJson = await runToolCall(registry, { name: "echo", args: "{text:" }, opts());
		expect(notJson.result).toMatchObject({ status: "error" });
		expect(notJson.result.output).toMatch(/not valid JSON/);
		expect(JSON.parse(notJson.inputJson)).toBe("{text:");

		const array = await runToolCall(registry, { name: "echo", args: "[1]" }, opts());
		expect(array.result.output).toMatch(/expected a JSON object/);
	});

	it("answers an unknown tool with the tools there are", async () => {
		const r = await runToolCall(registry, { name: "rm_rf", args: "{}" }, opts());
		expect(r.result).toMatchObject({ status: "error", name: "rm_rf" });
		expect(r.result.output).toMatch(/unknown tool 'rm_rf'; available tools: echo/);
	});

	it("caps output with a marker, within the byte limit, without splitting characters", async () => {
		const r = await runToolCall(registry, { name: "echo", args: { text: "é", times: 5000 } }, opts({ maxOutputBytes: 200 }));
		expect(r.result.status).toBe("success");
		expect(Buffer.byteLength(r.result.output)).toBeLessThanOrEqual(200);
		expect(r.result.output).toMatch(/…\[truncated: \d+ bytes in all\]$/);
		expect(r.result.output).not.toContain("\uFFFD");
		// A cut result is no longer JSON: it is stored as a string.
		expect(typeof JSON.parse(r.outputJson)).toBe("string");
		expect(capOutput("short", 100)).toEqual({ text: "short", truncated: false });
	});

	it("times out a hanging tool, aborts its signal, and turns a throw into an error result", async () => {
		let signal: AbortSignal | undefined;
		const hang = defineTool<Record<string, never>>({
			name: "hang",
			description: "never ends",
			parameters: { type: "object" },
			timeoutMs: 80,
			run: (_args, ctx) => {
				signal = ctx.signal;
				return new Promise(() => {});
			}
		});
		const boom = defineTool<Record<string, never>>({
			name: "boom",
			description: "throws",
			parameters: { type: "object" },
			run: () => {
				throw new Error("kaboom");
			}
		});
		// Rejects with its own AbortError as soon as its signal aborts, as well-behaved tools do.
		const polite = defineTool<Record<string, never>>({
			name: "polite",
			description: "waits until aborted",
			parameters: { type: "object" },
			timeoutMs: 50,
			run: (_args, ctx) => new Promise((_resolve, reject) => ctx.signal.addEventListener("abort", () => reject(new Error("aborted, cleaning up"))))
		});
		const reg = new ToolRegistry([hang, boom, polite] as ToolModule[]);
		expect((await runToolCall(reg, { name: "polite", args: {} }, opts())).result).toMatchObject({
			status: "timeout",
			output: "the tool did not finish within 50 ms"
		});
		const started = Date.now();
		const timedOut = await runToolCall(reg, { name: "hang", args: "" }, opts());
		expect(Date.now() - started).toBeGreaterThanOrEqual(75);
		expect(timedOut.result).toMatchObject({ status: "timeout", output: "the tool did not finish within 80 ms" });
		expect(signal?.aborted).toBe(true);
		const thrown = await runToolCall(reg, { name: "boom", args: "{}" }, opts());
		expect(thrown.result).toMatchObject({ status: "error", output: "kaboom" });
	});
});

describe("current_time", () => {
	it("gives the local time with its offset in a zone, and refuses an unknown zone", () => {
		const at = new Date("2025-01-15T12:00:00Z");
		expect(currentTime("Asia/Kolkata", at)).toMatchObject({ timezone: "Asia/Kolkata", iso: "2025-01-15T17:30:00+05:30" });
		expect(currentTime("utc", at)).toMatchObject({ timezone: "UTC", iso: "2025-01-15T12:00:00+00:00" });
		expect(currentTime("America/New_York", at).iso).toBe("2025-01-15T07:00:00-05:00");
		expect(currentTime("America/New_York", new Date("2025-07-15T12:00:00Z")).iso).toBe("2025-07-15T08:00:00-04:00");
		expect(currentTime("Asia/Kolkata", at).local).toMatch(/January 15, 2025/);
		expect(() => currentTime("Mars/Olympus_Mons", at)).toThrow(/unknown time zone 'Mars\/Olympus_Mons'/);
	});
});
