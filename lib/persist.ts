/**
 * Writes that must happen, whatever is briefly down: an answer's final state, its terminal event,
 * a quota settle. Each is idempotent (a settle of a released reservation, a final write of a
 * message no longer streaming and a flush of what is stored already are no-ops), so while it fails
 * because a dependency is away (lib/errors.ts isDependencyOutage) it is tried again with backoff
 * until it succeeds or its time is up; any other failure is final at once. The first failure and
 * the last are logged.
 */
import pRetry from "p-retry";
import { isDependencyOutage } from "./errors";

export interface PersistLogger {
	warn(...args: unknown[]): void;
	error(...args: unknown[]): void;
}

export interface PersistOptions {
	/** Give up after this long (the caller then says what it does instead). */
	maxRetryTimeMs: number;
	logger: PersistLogger;
	/** Named in the log lines, with `details`. */
	what: string;
	details?: Record<string, unknown>;
}

/** Resolves with the write's result, or rejects with its last error once the time is up. */
export function persist<T>(write: () => Promise<T>, opts: PersistOptions): Promise<T> {
	return pRetry(write, {
		retries: Number.POSITIVE_INFINITY,
		minTimeout: 100,
		maxTimeout: 2000,
		factor: 2,
		maxRetryTime: opts.maxRetryTimeMs,
		shouldRetry: ({ error }) => isDependencyOutage(error),
		onFailedAttempt: ({ error, attemptNumber }) => {
			if (attemptNumber === 1) opts.logger.warn(`${opts.what} failed; trying again`, { ...opts.details, err: error.message });
		}
	}).catch((err: unknown) => {
		opts.logger.error(`${opts.what} failed for good`, { ...opts.details, err: (err as Error).message });
		throw err;
	});
}

/** As persist, for callers that go on without the write once its time is up (the failure is logged by then). */
export function persistOrGiveUp<T>(write: () => Promise<T>, opts: PersistOptions): Promise<T | undefined> {
	return persist(write, opts).then(
		result => result,
		() => undefined
	);
}
