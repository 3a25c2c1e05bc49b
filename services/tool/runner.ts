/**
 * Running one tool call: find the tool, parse and validate its arguments, run it under its
 * timeout, and turn whatever happens into a result for the model. Nothing here throws: an
 * unknown tool, bad arguments, a tool that throws and a tool that hangs are all results, so one
 * bad call never fails the batch it is part of.
 */
import type { ToolContext, ToolRegistry } from "./registry";

/** Swallows a tool's rejection that arrives after the batch answered for it (see runWithTimeout). */
const lateFailureAfterTimeout = (): void => undefined;

export type ToolStatus = "success" | "error" | "timeout";

/** What the model gets back for one call. */
export interface ToolResult {
	toolCallId?: string;
	name: string;
	status: ToolStatus;
	/** The result as JSON text, or the error message; at most maxOutputBytes. */
	output: string;
	durationMs: number;
}

export interface ToolRequest {
	name: string;
	/** An object, or the JSON text of one (as models send them). */
	args: unknown;
	toolCallId?: string;
}

/** A result and what the tool_executions row keeps besides it. */
export interface Execution {
	result: ToolResult;
	/** JSON text for the input column: the arguments as parsed (with defaults), or the raw text when it was not JSON. */
	inputJson: string;
	/** JSON text for the output column: the result itself, or the message as a JSON string. */
	outputJson: string;
}

export interface RunOptions {
	defaultTimeoutMs: number;
	maxOutputBytes: number;
	userId: string;
	/** Calls an action as the user, with the given timeout. */
	call(action: string, params: Record<string, unknown> | undefined, timeoutMs: number): Promise<unknown>;
}

/** The reason a timed-out tool's signal carries. */
class ToolTimeoutError extends Error {
	constructor(readonly timeoutMs: number) {
		super(`the tool did not finish within ${timeoutMs} ms`);
		this.name = "ToolTimeoutError";
	}
}

/** Raised for a call that never reached its tool; its message goes to the model. */
class RejectedCall extends Error {}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Cuts text to maxBytes of UTF-8 (marker included) without splitting a character. */
export function capOutput(text: string, maxBytes: number): { text: string; truncated: boolean } {
	const bytes = encoder.encode(text);
	if (bytes.length <= maxBytes) return { text, truncated: false };
	const marker = `…[truncated: ${bytes.length} bytes in all]`;
	const keep = Math.max(0, maxBytes - encoder.encode(marker).length);
	// A cut inside a multi-byte character decodes to U+FFFD: drop that partial character.
	const head = decoder.decode(bytes.subarray(0, keep)).replace(/\uFFFD$/, "");
	return { text: head + marker, truncated: true };
}

/** Arguments beyond this are kept cut, as a string, in the tool_executions row. */
const MAX_STORED_INPUT_BYTES = 65_536;

/** NUL cannot be stored in jsonb text and means nothing to a model. */
const withoutNul = (_key: string, value: unknown) => (typeof value === "string" ? value.replaceAll("\0", "") : value);

function storableJson(value: unknown): string {
	try {
		return JSON.stringify(value, withoutNul) ?? "null";
	} catch {
		return JSON.stringify("(not serializable)");
	}
}

function parseArguments(args: unknown): Record<string, unknown> {
	let value = args ?? {};
	if (typeof args === "string") {
		// Some models send "" for a tool without parameters.
		if (!args.trim()) return {};
		try {
			value = JSON.parse(args);
		} catch (err) {
			throw new RejectedCall(`invalid arguments: not valid JSON (${(err as Error).message})`);
		}
	}
	if (typeof value !== "object" || value === null || Array.isArray(value)) throw new RejectedCall("invalid arguments: expected a JSON object");
	// A copy: validation fills in defaults, and the caller's params stay as they were sent.
	return structuredClone(value) as Record<string, unknown>;
}

function runWithTimeout(run: (signal: AbortSignal) => Promise<unknown>, timeoutMs: number): Promise<unknown> {
	const controller = new AbortController();
	let timer: NodeJS.Timeout | undefined;
	let timedOut: ToolTimeoutError | undefined;
	const expired = new Promise<never>((_resolve, reject) => {
		timer = setTimeout(() => {
			timedOut = new ToolTimeoutError(timeoutMs);
			reject(timedOut);
			controller.abort(timedOut);
		}, timeoutMs);
	});
	// Promise.resolve().then: a tool that throws synchronously is a rejection like any other.
	const work = Promise.resolve().then(() => run(controller.signal));
	// A tool that rejects after its timeout must not become an unhandled rejection; the race below
	// already answered (with the timeout), so its late failure has no one left to tell.
	work.catch(lateFailureAfterTimeout);
	// A well-behaved tool rejects with its own AbortError when aborted: that is still a timeout.
	return Promise.race([work, expired])
		.catch((err: unknown) => {
			throw timedOut ?? err;
		})
		.finally(() => clearTimeout(timer));
}

export async function runToolCall(registry: ToolRegistry, request: ToolRequest, opts: RunOptions): Promise<Execution> {
	const started = performance.now();
	let input: unknown = request.args;
	let status: ToolStatus = "error";
	let text: string;
	try {
		const entry = registry.get(request.name);
		if (!entry) throw new RejectedCall(`unknown tool '${request.name}'; available tools: ${registry.names.join(", ")}`);
		const args = parseArguments(request.args);
		input = args;
		const problem = entry.check(args);
		if (problem) throw new RejectedCall(`invalid arguments: ${problem}`);
		const timeoutMs = entry.tool.timeoutMs ?? opts.defaultTimeoutMs;
		const value = await runWithTimeout(signal => {
			const ctx: ToolContext = {
				userId: opts.userId,
				signal,
				call: <T>(action: string, params?: Record<string, unknown>) => opts.call(action, params, timeoutMs) as Promise<T>
			};
			return entry.tool.run(args, ctx);
		}, timeoutMs);
		text = JSON.stringify(value, withoutNul) ?? "null";
		status = "success";
	} catch (err) {
		if (err instanceof ToolTimeoutError) status = "timeout";
		const message = err instanceof Error ? err.message : String(err);
		text = (message || "the tool failed without a message").replaceAll("\0", "");
	}
	const durationMs = Math.round(performance.now() - started);
	const capped = capOutput(text, opts.maxOutputBytes);
	const inputText = storableJson(input);
	const inputCapped = capOutput(inputText, MAX_STORED_INPUT_BYTES);
	return {
		result: { ...(request.toolCallId !== undefined ? { toolCallId: request.toolCallId } : {}), name: request.name, status, output: capped.text, durationMs },
		inputJson: inputCapped.truncated ? JSON.stringify(inputCapped.text) : inputText,
		// Whole results are stored as the JSON they are; messages and cut results as strings.
		outputJson: status === "success" && !capped.truncated ? capped.text : JSON.stringify(capped.text)
	};
}
