/**
 * The simulator's request log: one entry per /v1/* request, updated in place while the request
 * is served, kept to the last MAX_LOG_ENTRIES.
 */

const MAX_LOG_ENTRIES = 1000;

export interface SimulatorRequestLogEntry {
	/** Also sent back as the `x-request-id` response header. */
	id: string;
	/** Arrival time, ms since the epoch. */
	at: number;
	method: string;
	/** URL path without the query string. */
	path: string;
	model: string | null;
	stream: boolean;
	/** The request's `messages` (chat completions only), else null. */
	messages: unknown[] | null;
	/** Names of the function tools offered. */
	tools: string[];
	/** The request's `x-simulator-*` and `x-request-id` headers; never Authorization. */
	headers: Record<string, string>;
	/** HTTP status once answered; null while nothing has been sent (e.g. a hanging non-stream request). */
	status: number | null;
	/** The client went away before the response was complete. */
	aborted: boolean;
	/** Content tokens (tool calls: tool-call deltas) produced so far. */
	completionTokens: number;
	promptTokens: number;
	finishReason: string | null;
	/** The response was completely written. */
	finished: boolean;
	/** Time from arrival to completion or abort; null while in flight. */
	durationMs: number | null;
}

export class RequestLog {
	private entries: SimulatorRequestLogEntry[] = [];

	add(entry: SimulatorRequestLogEntry): void {
		this.entries.push(entry);
		if (this.entries.length > MAX_LOG_ENTRIES) this.entries.splice(0, this.entries.length - MAX_LOG_ENTRIES);
	}

	/** Copies of the entries, oldest first. */
	list(): SimulatorRequestLogEntry[] {
		return this.entries.map(entry => ({ ...entry, tools: [...entry.tools], headers: { ...entry.headers } }));
	}

	clear(): void {
		this.entries = [];
	}
}

/** The headers a log entry keeps: x-simulator-* and x-request-id (never credentials). */
export function loggedHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> {
	const out: Record<string, string> = {};
	for (const [name, value] of Object.entries(headers)) {
		if (value === undefined) continue;
		if (name.startsWith("x-simulator-") || name === "x-request-id") {
			out[name] = Array.isArray(value) ? value.join(", ") : value;
		}
	}
	return out;
}
