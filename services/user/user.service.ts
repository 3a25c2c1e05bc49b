/**
 * user: accounts, sessions and API keys. Issues short-lived access tokens and rotating refresh
 * tokens, resolves any bearer credential into a caller (cached), and makes every revocation reach
 * that cache on every node at once.
 */
import type { Context, ServiceSchema } from "moleculer";
import { CREDENTIALS_CHANGED_EVENT, callerOf, ROLE_ADMIN, type AuthUser, type ChatmeshMeta, type CredentialsChangedEvent } from "../../lib/auth";
import {
	ChatmeshClientError,
	ConflictError,
	ERR_ACCOUNT_DISABLED,
	ERR_EMAIL_TAKEN,
	ERR_INVALID_CREDENTIALS,
	ERR_INVALID_TOKEN,
	ERR_TOKEN_EXPIRED,
	ERR_TOKEN_REVOKED,
	NotFoundError,
	UnauthorizedError
} from "../../lib/errors";
import { decodeCursor, pageOf } from "../../lib/cursor";
import { runtimeOf } from "../../lib/runtime";
import { CacheCleanerMixin, type CacheCleanerMethods } from "../../mixins/cache-cleaner.mixin";
import { assertPasswordRules, hashPassword, verifyPassword } from "./passwords";
import { apiKeyView, publicUser, UserStore, type ApiKeyView, type PublicUser, type UserStatus } from "./store";
import { isApiKey, newApiKey, newRefreshToken, sha256, signAccessToken, signingKey, unverifiedSessionId, verifyAccessToken } from "./credentials";

export interface AuthResult {
	user: PublicUser;
	accessToken: string;
	refreshToken: string;
	/** Seconds until the access token expires. */
	expiresIn: number;
	tokenType: "Bearer";
}

export interface ResolvedCredential {
	user: AuthUser;
	kind: "access" | "apiKey";
	/** Milliseconds since the epoch; null for API keys, which live until revoked. */
	expiresAt: number | null;
	/** The session (access token) or key (API key) it belongs to, so gateways can find its sockets when it is revoked. */
	sessionId?: string;
	keyId?: string;
}

export interface CreatedApiKey extends ApiKeyView {
	/** The secret itself, shown this once. */
	key: string;
}

export interface CredentialsParams {
	email: string;
	password: string;
}

const RESOLVE_CACHE = "user.resolveToken";

/** Cache keys name the session or key, never the secret, so revocation can find them. */
function resolveCacheKey(token: string): string {
	if (isApiKey(token)) return `${RESOLVE_CACHE}:k:${sha256(token)}`;
	const sid = unverifiedSessionId(token);
	return `${RESOLVE_CACHE}:${sid ? `s:${sid}` : "x"}:${sha256(token)}`;
}

const sessionPattern = (sessionId: string) => `${RESOLVE_CACHE}:s:${sessionId}:*`;

interface UserVars {
	store: UserStore;
	key: Uint8Array;
	accessTtlS: number;
	refreshTtlS: number;
}

interface UserMethods extends CacheCleanerMethods {
	issueTokens(user: { id: string; roles: string[] }, sessionId?: string, refresh?: { token: string }): Promise<Omit<AuthResult, "user">>;
	announce(change: CredentialsChangedEvent): Promise<void>;
}

/** The credential's owner as the record says now: roles are current, a disabled (or deleted) account holds nothing. */
function currentCaller(userId: string, status: UserStatus | undefined): AuthUser {
	if (!status) throw new UnauthorizedError("The account no longer exists", ERR_INVALID_TOKEN);
	if (status.disabled_at) throw new ChatmeshClientError("This account is disabled", ERR_ACCOUNT_DISABLED);
	return { id: userId, roles: status.roles };
}

type Ctx<P = Record<string, never>> = Context<P, ChatmeshMeta>;

const emailParam = { type: "email", max: 254, normalize: true, label: "email" } as const;

const UserService: ServiceSchema<Record<string, never>, UserMethods & Record<string, never>, UserVars> = {
	name: "user",
	// Revocations drop cached resolveToken results on every node at once.
	mixins: [CacheCleanerMixin("user")],

	actions: {
		register: {
			auth: "none",
			params: { email: emailParam, password: { type: "string", max: 1024 } },
			async handler(ctx: Ctx<CredentialsParams>): Promise<AuthResult> {
				const { email, password } = ctx.params;
				assertPasswordRules(password, email);
				const row = await this.store.createUser(email, await hashPassword(password));
				if (!row) throw new ChatmeshClientError("An account with this email already exists", ERR_EMAIL_TAKEN);
				ctx.meta.$statusCode = 201;
				ctx.meta.$location = "/api/me";
				return { user: publicUser(row), ...(await this.issueTokens(row)) };
			}
		},

		login: {
			auth: "none",
			params: { email: emailParam, password: { type: "string", max: 1024 } },
			async handler(ctx: Ctx<CredentialsParams>): Promise<AuthResult> {
				const row = await this.store.userByEmail(ctx.params.email);
				const ok = await verifyPassword(row?.password_hash, ctx.params.password);
				if (!row || !ok) throw new UnauthorizedError("Email or password is wrong", ERR_INVALID_CREDENTIALS);
				// Told only to whoever knows the password, so the status of an account does not leak.
				if ((await this.store.userStatus(row.id))?.disabled_at) throw new ChatmeshClientError("This account is disabled", ERR_ACCOUNT_DISABLED);
				return { user: publicUser(row), ...(await this.issueTokens(row)) };
			}
		},

		refresh: {
			auth: "none",
			params: { refreshToken: { type: "string", min: 1, max: 512 } },
			async handler(ctx: Ctx<{ refreshToken: string }>): Promise<Omit<AuthResult, "user">> {
				const next = newRefreshToken();
				const result = await this.store.rotateRefreshToken(sha256(ctx.params.refreshToken), {
					hash: next.hash,
					expiresAt: new Date(Date.now() + this.refreshTtlS * 1000)
				});
				switch (result.outcome) {
					case "unknown":
						throw new UnauthorizedError("Invalid refresh token", ERR_INVALID_TOKEN);
					case "expired":
						throw new UnauthorizedError("Refresh token expired", ERR_TOKEN_EXPIRED);
					case "revoked":
						throw new UnauthorizedError("Session was signed out", ERR_TOKEN_REVOKED);
					case "reused":
						await this.cleanCache([sessionPattern(result.row.session_id)]);
						await this.announce({ change: "sessionRevoked", userId: result.row.user_id, sessionId: result.row.session_id, code: ERR_TOKEN_REVOKED });
						this.logger.warn("Refresh token reuse: session revoked", { sessionId: result.row.session_id });
						throw new UnauthorizedError("Refresh token was already used; the session is revoked", ERR_TOKEN_REVOKED);
					case "rotated":
						return this.issueTokens({ id: result.row.user_id, roles: result.row.roles }, result.row.session_id, next);
				}
			}
		},

		logout: {
			auth: "none",
			params: { refreshToken: { type: "string", min: 1, max: 512 } },
			async handler(ctx: Ctx<{ refreshToken: string }>): Promise<void> {
				const session = await this.store.revokeSessionByRefreshHash(sha256(ctx.params.refreshToken), "signed out");
				// Unknown tokens sign out nothing, and say so no differently: logout is idempotent.
				if (session) {
					await this.cleanCache([sessionPattern(session.id)]);
					await this.announce({ change: "sessionRevoked", userId: session.user_id, sessionId: session.id, code: ERR_TOKEN_REVOKED });
				}
				ctx.meta.$statusCode = 204;
			}
		},

		me: {
			auth: "required",
			params: {},
			async handler(ctx: Ctx): Promise<PublicUser> {
				const row = await this.store.userById(callerOf(ctx).id);
				if (!row) throw new NotFoundError("user");
				return publicUser(row);
			}
		},

		/** Any bearer credential (access token or API key) into its caller, with the roles the user has now. */
		resolveToken: {
			visibility: "public",
			params: { token: { type: "string", min: 1, max: 4096 } },
			cache: {
				ttl: 60,
				keygen: (_action, _opts, ctx) => resolveCacheKey((ctx.params as { token: string }).token)
			},
			async handler(ctx: Ctx<{ token: string }>): Promise<ResolvedCredential> {
				const { token } = ctx.params;
				if (isApiKey(token)) {
					const key = await this.store.activeApiKey(sha256(token));
					if (!key) throw new UnauthorizedError("Invalid API key", ERR_INVALID_TOKEN);
					void this.store.touchApiKey(key.id).catch(err => this.logger.warn("API key touch failed", err));
					return { user: currentCaller(key.user_id, await this.store.userStatus(key.user_id)), kind: "apiKey", expiresAt: null, keyId: key.id };
				}
				const claims = await verifyAccessToken(this.key, token);
				// The token's role claims are only what held when it was signed; the record decides. Disabling
				// also ends the sessions, so the account's state is checked first: it is the more useful answer.
				const [user, active] = await Promise.all([this.store.userStatus(claims.userId), this.store.sessionActive(claims.sessionId)]);
				const caller = currentCaller(claims.userId, user);
				if (!active) throw new UnauthorizedError("Session was signed out", ERR_TOKEN_REVOKED);
				return { user: caller, kind: "access", expiresAt: claims.expiresAt, sessionId: claims.sessionId };
			}
		},

		createApiKey: {
			auth: "required",
			params: { name: { type: "string", min: 1, max: 100, trim: true } },
			async handler(ctx: Ctx<{ name: string }>): Promise<CreatedApiKey> {
				const { key, prefix, hash } = newApiKey();
				const row = await this.store.createApiKey(callerOf(ctx).id, ctx.params.name, prefix, hash);
				ctx.meta.$statusCode = 201;
				ctx.meta.$location = `/api/keys/${row.id}`;
				return { ...apiKeyView(row), key };
			}
		},

		listApiKeys: {
			auth: "required",
			params: {},
			async handler(ctx: Ctx): Promise<{ items: ApiKeyView[] }> {
				return { items: (await this.store.listApiKeys(callerOf(ctx).id)).map(apiKeyView) };
			}
		},

		revokeApiKey: {
			auth: "required",
			params: { id: { type: "uuid" } },
			async handler(ctx: Ctx<{ id: string }>): Promise<void> {
				const revoked = await this.store.revokeApiKey(callerOf(ctx).id, ctx.params.id);
				// Another user's key answers exactly like a missing one.
				if (!revoked) throw new NotFoundError("API key", ctx.params.id);
				await this.cleanCache([`${RESOLVE_CACHE}:k:${revoked.key_hash}`]);
				await this.announce({ change: "apiKeyRevoked", userId: callerOf(ctx).id, keyId: ctx.params.id, code: ERR_TOKEN_REVOKED });
				ctx.meta.$statusCode = 204;
			}
		},

		/** Admin: every user, newest first. */
		list: {
			roles: [ROLE_ADMIN],
			params: {
				limit: { type: "number", integer: true, min: 1, max: 100, default: 20, convert: true },
				cursor: { type: "string", optional: true, max: 200 }
			},
			async handler(ctx: Ctx<{ limit: number; cursor?: string }>): Promise<{ items: PublicUser[]; nextCursor: string | null }> {
				const after = decodeCursor(ctx.params.cursor);
				const rows = await this.store.listUsers(ctx.params.limit + 1, after && { createdAt: after.at, id: after.id });
				const page = pageOf(rows, ctx.params.limit, row => ({ at: row.created_at, id: row.id }));
				return { items: page.items.map(publicUser), nextCursor: page.nextCursor };
			}
		},

		/** Admin: grant or withdraw roles. */
		setRoles: {
			roles: [ROLE_ADMIN],
			params: { id: { type: "uuid" }, roles: { type: "array", items: { type: "enum", values: ["user", ROLE_ADMIN] }, min: 1, max: 5 } },
			async handler(ctx: Ctx<{ id: string; roles: string[] }>): Promise<PublicUser> {
				const row = await this.store.setRoles(ctx.params.id, [...new Set(ctx.params.roles)]);
				if (!row) throw new NotFoundError("user", ctx.params.id);
				// Cached credentials carry roles: drop them all so the change applies at once.
				await this.cleanCache([`${RESOLVE_CACHE}:*`]);
				await this.announce({ change: "rolesChanged", userId: row.id, roles: row.roles });
				return publicUser(row);
			}
		},

		/** Admin: disable an account (its sessions end; its keys, tokens and sockets stop at once) or enable it again. */
		setStatus: {
			roles: [ROLE_ADMIN],
			params: { id: { type: "uuid" }, disabled: { type: "boolean" } },
			async handler(ctx: Ctx<{ id: string; disabled: boolean }>): Promise<PublicUser & { disabled: boolean }> {
				if (ctx.params.disabled && ctx.params.id === callerOf(ctx).id) throw new ConflictError("An admin cannot disable their own account");
				const row = await this.store.setDisabled(ctx.params.id, ctx.params.disabled);
				if (!row) throw new NotFoundError("user", ctx.params.id);
				if (ctx.params.disabled) {
					await this.cleanCache([`${RESOLVE_CACHE}:*`]);
					await this.announce({ change: "userDisabled", userId: row.id, code: ERR_ACCOUNT_DISABLED });
				}
				return { ...publicUser(row), disabled: row.disabled_at !== null };
			}
		}
	},

	methods: {
		/** Every gateway replica must see it: each closes or downgrades the sockets it holds. */
		async announce(change: CredentialsChangedEvent) {
			await this.broker.broadcast(CREDENTIALS_CHANGED_EVENT, change);
		},

		async issueTokens(user: { id: string; roles: string[] }, sessionId?: string, refresh?: { token: string }) {
			let refreshToken = refresh?.token;
			let sid = sessionId;
			if (!sid) {
				const fresh = newRefreshToken();
				sid = await this.store.createSession(user.id, fresh.hash, new Date(Date.now() + this.refreshTtlS * 1000));
				refreshToken = fresh.token;
			}
			const access = await signAccessToken(this.key, { userId: user.id, sessionId: sid, roles: user.roles }, this.accessTtlS);
			return { accessToken: access.token, refreshToken: refreshToken as string, expiresIn: this.accessTtlS, tokenType: "Bearer" as const };
		}
	},

	created() {
		const runtime = runtimeOf(this.broker);
		if (!runtime.database) throw new Error("user service needs the database");
		this.store = new UserStore(runtime.database);
		this.key = signingKey(runtime.jwtSecret);
		this.accessTtlS = runtime.config.accessTokenTtlS;
		this.refreshTtlS = runtime.config.refreshTokenTtlS;
	}
};

export default UserService;
