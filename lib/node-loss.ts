/**
 * A call whose serving node died or was leaving before it answered produced nothing: it can go to
 * another node. Moleculer rejects the pending requests of a node that leaves the registry with
 * REQUEST_REJECTED (a killed node, once its heartbeats stop), and a node that is shutting down
 * refuses new work with SERVICE_UNAVAILABLE and `data.reason: "node-stopping"`. Other failures
 * (bad input, a provider's own refusal) are the answer, and are not tried again.
 */

/** `data.reason` of the refusal a node sends while it stops. */
export const NODE_STOPPING = "node-stopping";

const NODE_GONE_TYPES = new Set(["REQUEST_REJECTED", "SERVICE_NOT_AVAILABLE"]);

interface TypedError {
	type?: unknown;
	data?: { reason?: unknown } | null;
}

/** True when the error says the node serving the call went away (or is going) before answering. */
export function isNodeLoss(err: unknown): boolean {
	if (typeof err !== "object" || err === null) return false;
	const { type, data } = err as TypedError;
	return (typeof type === "string" && NODE_GONE_TYPES.has(type)) || data?.reason === NODE_STOPPING;
}

export interface FailoverOptions {
	/** Calls in all, the first included. */
	attempts: number;
	/** Wait before the n-th retry: n × this (a node that just left may take a moment to be dropped). */
	backoffMs: number;
	onRetry?(err: unknown, attempt: number): void;
}

/** Runs `call` again, up to the bound, while it fails because its node was lost. */
export async function withNodeFailover<T>(call: () => Promise<T>, opts: FailoverOptions): Promise<T> {
	for (let attempt = 1; ; attempt++) {
		try {
			return await call();
		} catch (err) {
			if (attempt >= opts.attempts || !isNodeLoss(err)) throw err;
			opts.onRetry?.(err, attempt);
			await new Promise(resolve => setTimeout(resolve, attempt * opts.backoffMs));
		}
	}
}
