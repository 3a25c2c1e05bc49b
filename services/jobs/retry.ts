/**
 * What a failed delivery of a job leads to: another attempt after a backoff, or the end.
 * Retryable are the failures another try may cure (a model timeout or 5xx, a lost node, a
 * dependency outage); a client error (bad input, blocked content, quota) is the answer.
 */
import {
	ERR_INTERRUPTED,
	ERR_RATE_LIMITED,
	ERR_STREAM_INTERRUPTED,
	ERR_UPSTREAM_ERROR,
	ERR_UPSTREAM_RATE_LIMITED,
	ERR_UPSTREAM_TIMEOUT,
	isDependencyOutage
} from "../../lib/errors";
import { isNodeLoss } from "../../lib/node-loss";
import type { RetryPolicy } from "./kind";

const RETRYABLE_TYPES = new Set([
	ERR_UPSTREAM_ERROR,
	ERR_UPSTREAM_TIMEOUT,
	ERR_UPSTREAM_RATE_LIMITED,
	// A rate limit passes: a later delivery is let through.
	ERR_RATE_LIMITED,
	ERR_INTERRUPTED,
	ERR_STREAM_INTERRUPTED,
	"REQUEST_TIMEOUT"
]);

export function isRetryable(err: unknown): boolean {
	if (typeof err !== "object" || err === null) return false;
	const { retryable, type, code } = err as { retryable?: unknown; type?: unknown; code?: unknown };
	// First: a service not (yet) reachable says 404 SERVICE_NOT_FOUND, yet another try may find it.
	if (isNodeLoss(err) || isDependencyOutage(err)) return true;
	if (typeof type === "string" && RETRYABLE_TYPES.has(type)) return true;
	if (typeof code === "number" && code >= 400 && code < 500) return false;
	if (retryable === true) return true;
	// A bad gateway, an unavailable service or a timeout may pass; a 500 is a bug that would repeat.
	return typeof code === "number" && code >= 502 && code <= 599;
}

/**
 * The wait before attempt `attempt + 1`: base × 2^(attempt-1), capped, of which half is fixed
 * and half random. Half fixed keeps each wait at least as long as the previous one's fixed part,
 * so waits grow; the random half spreads jobs that failed together (a provider outage).
 */
export function backoffMs(policy: RetryPolicy, attempt: number, random: () => number = Math.random): number {
	const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, attempt - 1));
	return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

/** The error as a job records it: type, message and a few safe fields. */
export function errorRecord(err: unknown): { type: string; message: string; retryable: boolean; data?: unknown } {
	const e = (typeof err === "object" && err !== null ? err : { message: String(err) }) as { type?: unknown; message?: unknown; data?: unknown };
	const type = typeof e.type === "string" ? e.type : "INTERNAL_ERROR";
	const message = typeof e.message === "string" ? e.message.slice(0, 1000) : "Job failed";
	return { type, message, retryable: isRetryable(err), ...(e.data !== undefined ? { data: e.data } : {}) };
}
