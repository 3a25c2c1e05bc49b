/**
 * The one place where an action's `auth` and `roles` flags are enforced. The gateway resolves a
 * bearer token into `ctx.meta.user` (id and roles only); this middleware runs on whichever node
 * serves the action, so no service checks authentication by hand.
 */
import type { ActionSchema, Context, Middleware } from "moleculer";
import type { ChatmeshMeta } from "../lib/auth";
import { ForbiddenError, UnauthorizedError } from "../lib/errors";

/** The flags as declared on action schemas (types/moleculer.d.ts). */
interface ActionAuthFlags {
	auth?: "required" | "optional" | "none";
	roles?: string[];
}

export function AuthMiddleware(): Middleware {
	return {
		name: "Auth",
		localAction(next, action: ActionSchema) {
			const { auth, roles } = action as ActionSchema & ActionAuthFlags;
			const mode = roles?.length ? "required" : (auth ?? "none");
			if (mode !== "required") return next;
			return function authorize(ctx: Context<unknown, ChatmeshMeta>) {
				// A refusal is a rejected promise like any action failure, never a synchronous throw.
				const user = ctx.meta.user;
				if (!user) return Promise.reject(new UnauthorizedError());
				if (roles?.length && !roles.some(r => user.roles.includes(r))) return Promise.reject(new ForbiddenError());
				return next.call(this, ctx);
			};
		}
	};
}
