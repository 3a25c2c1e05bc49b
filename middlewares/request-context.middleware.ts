/**
 * Keeps work in its request (lib/request-context.ts). Every local action and event handler runs
 * inside its context's AsyncLocalStorage scope, so what it logs carries the request id; and a call,
 * emit or broadcast made through the broker from inside a scope without a context of its own (a
 * turn runs on after `conversation.send` answered, and calls the llm, quota and moderation through
 * the broker) joins that request and, when traced, sits under the scope's span. One
 * AsyncLocalStorage.run per handler and no allocation there: the context itself is the scope.
 */
import type { ActionHandler, CallingOptions, Context, Middleware, Service } from "moleculer";
import { callOriginOf, currentRequest, enableRequestScopes, runInRequest } from "../lib/request-context";

type EventSchemaHandler = NonNullable<Middleware["localEvent"]> extends (next: infer H, ...rest: never[]) => unknown ? H : never;
type Send = (name: string, payload: unknown, opts?: CallingOptions) => unknown;

/** The options of a broker call made in a scope: its origin added, unless the caller named one. */
function inScope(opts: CallingOptions | undefined): CallingOptions | undefined {
	if (opts?.parentCtx || opts?.parentSpan || opts?.requestID) return opts;
	const scope = currentRequest();
	return scope ? { ...opts, ...callOriginOf(scope) } : opts;
}

const joinRequest = (next: Send): Send =>
	function joined(name, payload, opts) {
		return next(name, payload, inScope(opts));
	};

export function RequestContextMiddleware(): Middleware {
	enableRequestScopes();
	return {
		name: "RequestContext",
		localAction(next: ActionHandler<Service>): ActionHandler<Service> {
			// Moleculer's own middlewares call the next handler unbound too.
			const handler = next as (ctx: Context) => unknown;
			return (ctx: Context) => runInRequest(ctx, handler, ctx);
		},
		localEvent(next: EventSchemaHandler): EventSchemaHandler {
			return (ctx: Context) => runInRequest(ctx, next, ctx);
		},
		call: joinRequest as unknown as Middleware["call"],
		emit: joinRequest as unknown as Middleware["emit"],
		broadcast: joinRequest as unknown as Middleware["broadcast"]
	};
}
