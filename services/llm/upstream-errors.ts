/**
 * The one mapping from a provider failure to chatmesh's stable upstream codes. Whatever the SDK,
 * the network or our own timers report, callers of the llm service only ever see these types:
 *
 *   429                                   → UPSTREAM_RATE_LIMITED
 *   408, 504, connect/first-token/idle timeout → UPSTREAM_TIMEOUT
 *   400, 413, 422 (and other 4xx not below) → UPSTREAM_BAD_REQUEST (the request itself is refused)
 *   401, 403, 404, 5xx, connection failure, a stream cut short → UPSTREAM_ERROR (the provider is at fault)
 *
 * Messages are ours, never the provider's body (it may name keys or internal hosts); the
 * provider's own message goes to the log only.
 */
import { ERR_UPSTREAM_BAD_REQUEST, ERR_UPSTREAM_ERROR, ERR_UPSTREAM_RATE_LIMITED, ERR_UPSTREAM_TIMEOUT, UpstreamError } from "../../lib/errors";
import { isUndiciTimeout, ProviderConnectionError, ProviderStatusError, ProviderStreamError } from "./provider-stream";

/** Why an attempt's AbortController fired; the timers and stop requests pass one as the abort reason. */
export type AbortReason =
	| { kind: "first-token-timeout"; ms: number }
	| { kind: "idle-timeout"; ms: number }
	/** Stopped from outside: cancel, consumer gone, shutdown, caller deadline. */
	| { kind: "stop" };

export interface UpstreamContext {
	provider: string;
	model: string;
}

const PROVIDER_FAULTS: ReadonlySet<string> = new Set([ERR_UPSTREAM_ERROR, ERR_UPSTREAM_TIMEOUT, ERR_UPSTREAM_RATE_LIMITED]);

/**
 * Failures that say "this provider, now" rather than "this request": before the first token
 * the next provider is tried, and they count against the provider's circuit breaker.
 * UPSTREAM_BAD_REQUEST would fail the same way anywhere.
 */
export function isProviderFault(type: string): boolean {
	return PROVIDER_FAULTS.has(type);
}

function typeOfStatus(status: number): string {
	if (status === 429) return ERR_UPSTREAM_RATE_LIMITED;
	if (status === 408 || status === 504) return ERR_UPSTREAM_TIMEOUT;
	if (status === 401 || status === 403 || status === 404) return ERR_UPSTREAM_ERROR; // our configuration, not the caller's request
	if (status >= 400 && status < 500) return ERR_UPSTREAM_BAD_REQUEST;
	return ERR_UPSTREAM_ERROR;
}

const MESSAGES: Readonly<Record<string, string>> = {
	[ERR_UPSTREAM_RATE_LIMITED]: "is rate limiting requests",
	[ERR_UPSTREAM_TIMEOUT]: "timed out",
	[ERR_UPSTREAM_BAD_REQUEST]: "refused the request",
	[ERR_UPSTREAM_ERROR]: "failed"
};

function upstream(type: string, detail: string, ctx: UpstreamContext, extra: Record<string, unknown> = {}): UpstreamError {
	return new UpstreamError(`Model provider "${ctx.provider}" ${MESSAGES[type] ?? "failed"} (${detail})`, type, {
		provider: ctx.provider,
		model: ctx.model,
		...extra
	});
}

/**
 * Maps anything an upstream attempt threw or was aborted with to an UpstreamError. `abort` is
 * the attempt's abort reason when its controller fired (the request then reports a plain abort).
 */
export function toUpstreamError(err: unknown, ctx: UpstreamContext, abort?: AbortReason): UpstreamError {
	if (err instanceof UpstreamError) return err;
	if (abort?.kind === "first-token-timeout") return upstream(ERR_UPSTREAM_TIMEOUT, `no first token within ${abort.ms} ms`, ctx);
	if (abort?.kind === "idle-timeout") return upstream(ERR_UPSTREAM_TIMEOUT, `no chunk for ${abort.ms} ms`, ctx);
	if (isUndiciTimeout(err)) return upstream(ERR_UPSTREAM_TIMEOUT, "connection timed out", ctx);
	if (err instanceof ProviderConnectionError) return upstream(ERR_UPSTREAM_ERROR, "connection failed", ctx);
	// An error event inside a 200 stream: the provider failed mid-answer.
	if (err instanceof ProviderStreamError) return upstream(ERR_UPSTREAM_ERROR, "error event in the stream", ctx);
	if (err instanceof ProviderStatusError) return upstream(typeOfStatus(err.status), `status ${err.status}`, ctx, { status: err.status });
	// undici's "terminated" and friends: the connection broke while the body was read.
	return upstream(ERR_UPSTREAM_ERROR, "the connection broke", ctx);
}

/** The provider's own words, for the log line next to the mapped error. */
export function upstreamDetail(err: unknown): string {
	if (err instanceof Error) return err.message;
	return String(err);
}
