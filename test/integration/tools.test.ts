import { setTimeout as sleep } from "node:timers/promises";
import { Ajv } from "ajv";
import pg from "pg";
import { describe, expect, it } from "vitest";
import type { ToolCall, ToolDefinition } from "../../lib/chat-protocol";
import { extendService } from "../../lib/service";
import type { ChatmeshNode } from "../../node";
import { defineTool, type ToolModule } from "../../services/tool/registry";
import ToolService, { type ToolResult } from "../../services/tool/tool.service";
import type { TestDatabase } from "../helpers/infra";
import { withChatNode } from "../helpers/fixtures";

// The tool service on one node against the real PostgreSQL and Redis. Slow, hanging and throwing
// tools come in through settings.extraTools on a service built with mixins: [ToolService], the
// same extension point a deployment uses for its own tools.

const noArgs = { type: "object", properties: {}, additionalProperties: false } as const;

/** Per hanging tool: its signal, and how long after its start the signal aborted. */
const hung = new Map<string, { signal: AbortSignal; abortedAfterMs?: number }>();
/** Hanging tools in the order their signals aborted. */
const abortOrder: string[] = [];

/** Tools that arrived at the meeting point; each waits there for the other one of its pair. */
const arrived = new Map<string, () => void>();

/**
 * Finishes only once `partner` has started too: run one after the other, the first would wait
 * for a partner that never comes and end in a timeout.
 */
function meeter(name: string, partner: string): ToolModule {
	return defineTool<Record<string, never>>({
		name,
		description: `Waits for ${partner}`,
		parameters: noArgs,
		async run(_args, ctx) {
			const met = new Promise<void>(resolve => arrived.set(name, resolve));
			arrived.get(partner)?.();
			if (arrived.has(partner)) arrived.get(name)?.();
			await Promise.race([met, new Promise((_, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)))]);
			return { met: partner };
		}
	});
}

function sleeper(name: string, ms: number): ToolModule {
	return defineTool<Record<string, never>>({
		name,
		description: `Waits ${ms} ms`,
		parameters: noArgs,
		async run(_args, ctx) {
			await sleep(ms, undefined, { signal: ctx.signal });
			return { slept: ms };
		}
	});
}

function hanger(name: string, timeoutMs?: number): ToolModule {
	return defineTool<Record<string, never>>({
		name,
		description: "Never finishes on its own",
		parameters: noArgs,
		timeoutMs,
		run(_args, ctx) {
			const started = Date.now();
			const entry: { signal: AbortSignal; abortedAfterMs?: number } = { signal: ctx.signal };
			hung.set(name, entry);
			ctx.signal.addEventListener("abort", () => {
				entry.abortedAfterMs = Date.now() - started;
				abortOrder.push(name);
			});
			return new Promise(() => {});
		}
	});
}

const EXTRA_TOOLS: ToolModule[] = [
	sleeper("slow_300", 300),
	sleeper("slow_400", 400),
	meeter("meet_a", "meet_b"),
	meeter("meet_b", "meet_a"),
	hanger("hang"),
	hanger("hang_short", 150),
	defineTool<Record<string, never>>({
		name: "boom",
		description: "Always fails",
		parameters: noArgs,
		async run() {
			throw new Error("the weather service is down");
		}
	}),
	defineTool<Record<string, never>>({
		name: "big",
		description: "Returns far too much",
		parameters: noArgs,
		async run() {
			return { text: "x".repeat(100_000) };
		}
	})
];

const call = (id: string, name: string, args: unknown = {}): ToolCall => ({
	id,
	type: "function",
	function: { name, arguments: typeof args === "string" ? args : JSON.stringify(args) }
});

describe("tool service", () => {
	let db: TestDatabase;
	let sql: pg.Client;
	let node: ChatmeshNode;
	let alice: string;
	let bob: string;
	const as = (id: string) => ({ meta: { user: { id, roles: ["user"] } } });

	async function addUser(label: string): Promise<string> {
		const { rows } = await sql.query<{ id: string }>("INSERT INTO users (email, password_hash) VALUES ($1, 'not-a-hash') RETURNING id", [
			`${label}-${Date.now()}@example.test`
		]);
		return rows[0].id;
	}

	async function execute(name: string, args?: unknown, user = alice): Promise<ToolResult> {
		return node.broker.call<ToolResult, Record<string, unknown>>("tool.execute", { name, ...(args === undefined ? {} : { arguments: args }) }, as(user));
	}

	async function batch(service: string, calls: ToolCall[], extra: Record<string, unknown> = {}, user = alice): Promise<ToolResult[]> {
		return node.broker.call<ToolResult[], Record<string, unknown>>(`${service}.executeBatch`, { calls, ...extra }, as(user));
	}

	withChatNode({
		label: "tools",
		models: ["sim-small"],
		stopping: () => sql?.end(),
		async started(f) {
			({ db, node } = f);
			sql = new pg.Client({ connectionString: db.url });
			await sql.connect();
			alice = await addUser("alice");
			bob = await addUser("bob");
			// A deployment's own tool service: the built-ins plus extra tools, a shorter default timeout.
			node.broker.createService(extendService(ToolService, { name: "toolx", settings: { defaultTimeoutMs: 600, extraTools: EXTRA_TOOLS } }));
			// The same with a bulkhead of one running batch and one waiting.
			node.broker.createService(
				extendService(ToolService, { name: "tooly", settings: { extraTools: [sleeper("slow_300", 300)], batchConcurrency: 1, batchQueueSize: 1 } })
			);
			await node.broker.waitForServices(["tool", "toolx", "tooly", "conversation"], 10_000);
		}
	});

	it("lists the tools as valid OpenAI tool definitions", async () => {
		const defs = await node.broker.call<ToolDefinition[]>("tool.list");
		expect(defs.map(d => d.function.name).sort()).toEqual(["calculator", "current_time", "search_conversations"]);
		const ajv = new Ajv({ strict: true });
		for (const def of defs) {
			expect(def.type).toBe("function");
			expect(def.function.name).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
			expect(def.function.description?.length).toBeGreaterThan(10);
			const params = def.function.parameters as { type: string; properties: Record<string, unknown>; required?: string[] };
			expect(params.type).toBe("object");
			for (const key of params.required ?? []) expect(Object.keys(params.properties)).toContain(key);
			expect(ajv.validateSchema(params)).toBe(true);
		}
		// A deployment's extra tools are offered beside the built-ins.
		const extended = await node.broker.call<ToolDefinition[]>("toolx.list");
		expect(extended.map(d => d.function.name)).toEqual(expect.arrayContaining(["calculator", "slow_300", "boom", "big"]));
	});

	it("calculates with precedence, unary minus, functions and right-associative powers", async () => {
		const table: Array<[string, number]> = [
			["1 + 2 * 3", 7],
			["(1 + 2) * 3", 9],
			["2 ^ 3 ^ 2", 512],
			["-2 ^ 2", -4],
			["-(3 - 5) * 4", 8],
			["10 % 4 + 8 / 4", 4],
			["sqrt(144) + abs(-2.5) - round(1.4)", 13.5],
			["sin(pi / 2) + cos(0) + log(e)", 3],
			["2 * pi", 6.28318530717959],
			["0.1 + 0.2", 0.3]
		];
		for (const [expression, expected] of table) {
			const r = await execute("calculator", { expression });
			expect(r, expression).toMatchObject({ name: "calculator", status: "success" });
			expect(JSON.parse(r.output), expression).toBeCloseTo(expected, 10);
		}
	});

	it("answers hostile or broken calculator input with error results", async () => {
		const cases: Array<[string, RegExp]> = [
			["process.exit()", /unexpected character '\.'/],
			["constructor", /unknown name 'constructor'/],
			["1/0", /division by zero/],
			["2**", /unexpected end/],
			["a=1", /unexpected character '='/],
			["this.constructor.constructor('return process')()", /unexpected character '\.'/]
		];
		for (const [expression, message] of cases) {
			const r = await execute("calculator", { expression });
			expect(r.status, expression).toBe("error");
			expect(r.output, expression).toMatch(message);
		}
		// The node is still here and still calculating.
		expect((await execute("calculator", { expression: "6 * 7" })).output).toBe("42");
	});

	it("tells the time in a zone, in UTC by default, and refuses an unknown zone", async () => {
		const tokyo = await execute("current_time", { timezone: "Asia/Tokyo" });
		expect(tokyo.status).toBe("success");
		const t = JSON.parse(tokyo.output) as { timezone: string; iso: string; local: string };
		expect(t.timezone).toBe("Asia/Tokyo");
		expect(t.iso).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+09:00$/);
		expect(Math.abs(Date.parse(t.iso) - Date.now())).toBeLessThan(5000);
		expect(t.local).toMatch(/GMT\+9/);

		const utc = JSON.parse((await execute("current_time")).output) as { timezone: string; iso: string };
		expect(utc.timezone).toBe("UTC");
		expect(utc.iso).toMatch(/\+00:00$/);

		const unknown = await execute("current_time", '{"timezone":"Mars/Olympus_Mons"}');
		expect(unknown).toMatchObject({ status: "error" });
		expect(unknown.output).toMatch(/unknown time zone 'Mars\/Olympus_Mons'/);
	});

	it("searches only the caller's own conversations", async () => {
		const conversation = async (user: string, contents: string[]) => {
			const { rows } = await sql.query<{ id: string }>("INSERT INTO conversations (user_id, title) VALUES ($1, 't') RETURNING id", [user]);
			for (const content of contents)
				await sql.query("INSERT INTO messages (conversation_id, user_id, role, content) VALUES ($1, $2, 'user', $3)", [rows[0].id, user, content]);
			return rows[0].id;
		};
		const mine = await conversation(alice, ["My zebra is called Stripes", "nothing to see"]);
		await conversation(bob, ["Bob's zebra secret"]);

		const [result] = await batch("tool", [call("s1", "search_conversations", { query: "ZEBRA" })]);
		expect(result).toMatchObject({ toolCallId: "s1", status: "success" });
		const found = JSON.parse(result.output) as { count: number; items: Array<{ conversationId: string; snippet: string; role: string }> };
		expect(found.count).toBe(1);
		expect(found.items[0]).toMatchObject({ conversationId: mine, role: "user" });
		expect(found.items[0].snippet).toContain("zebra is called Stripes");
		expect(result.output).not.toContain("Bob");

		const asBob = await batch("tool", [call("s2", "search_conversations", { query: "zebra", limit: 5 })], {}, bob);
		expect(JSON.parse(asBob[0].output)).toMatchObject({ count: 1, items: [{ snippet: "Bob's zebra secret" }] });
	});

	it("runs a batch in parallel: two calls that each finish only when the other has started both succeed", async () => {
		arrived.clear();
		const results = await batch("toolx", [call("a", "meet_a"), call("b", "meet_b")]);
		expect(results.map(r => [r.toolCallId, r.status, r.output])).toEqual([
			["a", "success", JSON.stringify({ met: "meet_b" })],
			["b", "success", JSON.stringify({ met: "meet_a" })]
		]);
	});

	it("turns throws, hangs, bad arguments and unknown tools into results, in call order, each recorded", async () => {
		const messageId = crypto.randomUUID();
		const generationId = crypto.randomUUID();
		const calls = [
			call("c1", "boom"),
			call("c2", "hang"),
			call("c3", "hang_short"),
			call("c4", "calculator", { expression: 5 }),
			call("c5", "calculator", "{not json"),
			call("c6", "no_such_tool"),
			call("c7", "calculator", { expression: "2 ^ 10" }),
			call("c8", "big")
		];
		abortOrder.length = 0;
		const results = await batch("toolx", calls, { messageId, generationId });

		expect(results.map(r => r.toolCallId)).toEqual(["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"]);
		expect(results.map(r => r.status)).toEqual(["error", "timeout", "timeout", "error", "error", "error", "success", "success"]);
		expect(results[0].output).toBe("the weather service is down");
		// The default timeout of the service's settings, and a tool's own shorter one.
		expect(results[1].output).toBe("the tool did not finish within 600 ms");
		expect(results[1].durationMs).toBeGreaterThanOrEqual(590);
		expect(results[2].output).toBe("the tool did not finish within 150 ms");
		expect(results[2].durationMs).toBeGreaterThanOrEqual(145);
		expect(hung.get("hang")?.signal.aborted).toBe(true);
		expect(hung.get("hang")?.abortedAfterMs).toBeGreaterThanOrEqual(590);
		expect(hung.get("hang_short")?.signal.aborted).toBe(true);
		// Both hung at once (not one after the other), and the shorter timeout ended its call first.
		expect(abortOrder).toEqual(["hang_short", "hang"]);
		expect(results[3].output).toMatch(/^invalid arguments: .*expression must be string/);
		expect(results[4].output).toMatch(/^invalid arguments: not valid JSON/);
		expect(results[5].output).toMatch(/^unknown tool 'no_such_tool'/);
		expect(results[6].output).toBe("1024");
		// Untrusted output is capped, with a marker.
		expect(Buffer.byteLength(results[7].output)).toBeLessThanOrEqual(16_384);
		expect(results[7].output).toMatch(/…\[truncated: \d+ bytes in all\]$/);

		const { rows } = await sql.query<{
			tool_call_id: string;
			tool_name: string;
			status: string;
			duration_ms: number;
			input: unknown;
			output: unknown;
			message_id: string;
			user_id: string;
		}>(
			"SELECT tool_call_id, tool_name, status, duration_ms, input, output, message_id, user_id FROM tool_executions WHERE generation_id = $1 ORDER BY tool_call_id",
			[generationId]
		);
		expect(rows.map(r => [r.tool_call_id, r.tool_name, r.status])).toEqual(calls.map((c, i) => [c.id, c.function.name, results[i].status]));
		for (const [i, row] of rows.entries()) {
			expect(row).toMatchObject({ message_id: messageId, user_id: alice });
			expect(row.duration_ms).toBe(results[i].durationMs);
		}
		expect(rows[6]).toMatchObject({ input: { expression: "2 ^ 10" }, output: 1024 });
		expect(rows[0].output).toBe("the weather service is down");
		expect(rows[4].input).toBe("{not json");
	});

	it("records single executions too", async () => {
		const messageId = crypto.randomUUID();
		await node.broker.call("tool.execute", { name: "calculator", arguments: { expression: "1+1" }, messageId, toolCallId: "one" }, as(alice));
		const { rows } = await sql.query("SELECT tool_name, status, output, tool_call_id FROM tool_executions WHERE message_id = $1", [messageId]);
		expect(rows).toEqual([{ tool_name: "calculator", status: "success", output: 2, tool_call_id: "one" }]);
	});

	it("refuses more calls than the cap with a 400", async () => {
		const calls = Array.from({ length: 17 }, (_, i) => call(`k${i}`, "calculator", { expression: `${i}` }));
		await expect(batch("tool", calls)).rejects.toMatchObject({ code: 400, type: "BAD_REQUEST" });
		const sixteen = await batch("tool", calls.slice(0, 16));
		expect(sixteen.map(r => r.output)).toEqual(Array.from({ length: 16 }, (_, i) => `${i}`));
	});

	it("needs a caller", async () => {
		// async: the auth middleware throws synchronously on a local call.
		const anonymous = async (action: string, params: Record<string, unknown>) => node.broker.call(action, params);
		await expect(anonymous("tool.executeBatch", { calls: [call("x", "calculator", { expression: "1" })] })).rejects.toMatchObject({ code: 401 });
		await expect(anonymous("tool.execute", { name: "calculator", arguments: { expression: "1" } })).rejects.toMatchObject({ code: 401 });
	});

	it("returns the results even when they cannot be recorded", async () => {
		// A caller with no users row: the rows' foreign key refuses the insert.
		const ghost = crypto.randomUUID();
		const generationId = crypto.randomUUID();
		const results = await batch("tool", [call("g1", "calculator", { expression: "3 * 3" })], { generationId }, ghost);
		expect(results).toMatchObject([{ toolCallId: "g1", status: "success", output: "9" }]);
		const { rows } = await sql.query("SELECT 1 FROM tool_executions WHERE generation_id = $1", [generationId]);
		expect(rows).toHaveLength(0);
	});

	it("bounds concurrent batches with a bulkhead", async () => {
		const attempts = await Promise.allSettled([1, 2, 3].map(i => batch("tooly", [call(`b${i}`, "slow_300")])));
		expect(attempts.filter(a => a.status === "fulfilled")).toHaveLength(2);
		const refused = attempts.find(a => a.status === "rejected");
		expect(refused?.reason).toMatchObject({ type: "QUEUE_FULL" });
	});
});
