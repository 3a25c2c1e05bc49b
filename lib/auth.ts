/**
 * Who is calling: the user the gateway resolved from a bearer token (id and roles only), as every
 * service reads it from `ctx.meta`. The `auth`/`roles` flags are enforced by
 * middlewares/auth.middleware.ts.
 */
import type { Context } from "moleculer";
import { UnauthorizedError } from "./errors";

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

export const ROLE_ADMIN = "admin";

/** The signed-in caller, or 401. */
export function callerOf(ctx: Context<unknown, ChatmeshMeta>): AuthUser {
	const user = ctx.meta.user;
	if (!user) throw new UnauthorizedError();
	return user;
}
