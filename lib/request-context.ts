/**
 * Which request a piece of work belongs to, without passing it around: the request-context
 * middleware runs every action and event handler inside an AsyncLocalStorage scope holding its
 * Moleculer context, and the JSON log formatter reads the request id (and trace id) from there.
 * The scope holds the context itself, so nothing is computed unless a line is logged.
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { createHash } from "node:crypto";

/** What a scope needs of a Moleculer Context (which it usually is). */
export interface RequestScope {
	id: string;
	requestID: string | null;
	/** Whether this request's spans are sampled; null/false: no trace to point at. */
	tracing: boolean | null;
}

const storage = new AsyncLocalStorage<RequestScope>();

export function currentRequest(): RequestScope | undefined {
	return storage.getStore();
}

/** Scopes cost a little on every promise once used: they are kept only where something reads them. */
let scopesOn = false;

/** Called by the request-context middleware, which is registered when JSON logs or tracing are on. */
export function enableRequestScopes(): void {
	scopesOn = true;
}

export function runInRequest<A extends unknown[], R>(scope: RequestScope, fn: (...args: A) => R, ...args: A): R {
	return scopesOn ? storage.run(scope, fn, ...args) : fn(...args);
}

/** Work that must not carry the request that happened to start it (a long-lived reader loop, a timer). */
export function outsideRequests<R>(fn: () => R): R {
	return storage.exit(fn);
}

/** Calling options that keep a call in its request: under the calling action's span, in its trace. */
export interface CallOrigin {
	requestID?: string;
	parentSpan?: { id: string; traceID: string; sampled: boolean };
}

/**
 * For calls made through the broker by work an action started (a turn runs on after
 * `conversation.send` answered): the same request id, and, when traced, a child of that action's
 * span (an action's span id is its context id), as ctx.call would make it.
 */
export function callOriginOf(ctx: RequestScope): CallOrigin {
	// Not traced (tracing off, or a scope that is no action, such as a socket.io event): the id alone.
	if (ctx.tracing === null) return ctx.requestID ? { requestID: ctx.requestID } : {};
	return { parentSpan: { id: ctx.id, traceID: ctx.requestID ?? ctx.id, sampled: ctx.tracing } };
}

/** Client-given request ids: short, and only characters safe in headers, logs and trace tags. */
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,64}$/;

/** The client's `X-Request-Id` when it is acceptable; undefined makes Moleculer use a fresh id. */
export function acceptRequestId(header: string | string[] | undefined): string | undefined {
	return typeof header === "string" && REQUEST_ID.test(header) ? header : undefined;
}

const HEX_TRACE_ID = /^(?:[0-9a-f]{16}|[0-9a-f]{32})$/;

/**
 * Moleculer uses the request id as the trace id of every span of a request. Zipkin-compatible
 * collectors want 16 or 32 lower-case hex digits: a UUID (Moleculer's own ids) loses its dashes,
 * anything else a client sent is hashed. Logs carry the same value, so a log line leads to its trace.
 */
export function traceIdOf(requestId: string): string {
	const compact = requestId.replace(/-/g, "").toLowerCase();
	if (HEX_TRACE_ID.test(compact)) return compact;
	return createHash("sha256").update(requestId).digest("hex").slice(0, 32);
}

/** A span id in Zipkin's form: 16 hex digits. Moleculer's span ids are UUIDs. */
export function spanIdOf(id: string): string {
	const compact = id.replace(/-/g, "").toLowerCase();
	if (/^[0-9a-f]{16,}$/.test(compact)) return compact.slice(0, 16);
	return createHash("sha256").update(id).digest("hex").slice(0, 16);
}
