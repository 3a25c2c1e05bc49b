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

/**
 * Broadcast by the user service when credentials stop holding or a user's roles change, so every
 * gateway replica closes (or downgrades) the sockets it holds for them at once.
 */
export const CREDENTIALS_CHANGED_EVENT = "user.credentialsChanged";

/** `code` is the stable error type the affected sockets are told (`auth:revoked { code }`). */
export type CredentialsChangedEvent =
	| { change: "sessionRevoked"; userId: string; sessionId: string; code: string }
	| { change: "apiKeyRevoked"; userId: string; keyId: string; code: string }
	| { change: "userDisabled"; userId: string; code: string }
	| { change: "rolesChanged"; userId: string; roles: string[] };

/** The signed-in caller, or 401. */
export function callerOf(ctx: Context<unknown, ChatmeshMeta>): AuthUser {
	const user = ctx.meta.user;
	if (!user) throw new UnauthorizedError();
	return user;
}
