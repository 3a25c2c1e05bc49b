/**
 * Who is calling, and the one place where an action's `auth` and `roles` flags are enforced.
 * The gateway resolves a bearer token into `ctx.meta.user` (id and roles only); this middleware
 * runs on whichever node serves the action, so no service checks authentication by hand.
 */
import type { ActionSchema, Context, Middleware } from "moleculer";
import { ForbiddenError, UnauthorizedError } from "./errors";

export interface AuthUser {
	id: string;
	roles: string[];
}

/** What chatmesh keeps in ctx.meta: the caller, and moleculer-web's response controls. */
export interface ChatmeshMeta {
	user?: AuthUser;
	$statusCode?: number;
	/** The Location of a resource a 201 created. */
	$location?: string;
	$responseHeaders?: Record<string, string>;
}

export type ChatmeshContext<P = unknown> = Context<P, ChatmeshMeta>;

export const ROLE_ADMIN = "admin";

/** The signed-in caller, or 401. */
export function callerOf(ctx: Context<unknown, ChatmeshMeta>): AuthUser {
	const user = ctx.meta.user;
	if (!user) throw new UnauthorizedError();
	return user;
}

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
