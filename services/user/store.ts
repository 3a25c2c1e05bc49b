/**
 * The user service's SQL: users, sessions with their refresh-token families, and API keys.
 * Plain parameterised queries on the node's Database.
 */
import type { DatabaseError } from "pg";
import type { Database } from "../../lib/db";

export interface UserRow {
	id: string;
	email: string;
	password_hash: string;
	roles: string[];
	created_at: Date;
}

/** Who a credential acts for now: current roles, and whether an admin disabled the account. */
export interface UserStatus {
	roles: string[];
	disabled_at: Date | null;
}

export interface PublicUser {
	id: string;
	email: string;
	roles: string[];
	createdAt: string;
}

export interface RefreshTokenRow {
	id: string;
	session_id: string;
	expires_at: Date;
	used_at: Date | null;
	session_revoked_at: Date | null;
	user_id: string;
	roles: string[];
}

export interface ApiKeyRow {
	id: string;
	user_id: string;
	name: string;
	prefix: string;
	created_at: Date;
	last_used_at: Date | null;
	revoked_at: Date | null;
}

export interface ApiKeyView {
	id: string;
	name: string;
	prefix: string;
	createdAt: string;
	lastUsedAt: string | null;
	revokedAt: string | null;
}

export function publicUser(row: UserRow): PublicUser {
	return { id: row.id, email: row.email, roles: row.roles, createdAt: row.created_at.toISOString() };
}

export function apiKeyView(row: ApiKeyRow): ApiKeyView {
	return {
		id: row.id,
		name: row.name,
		prefix: row.prefix,
		createdAt: row.created_at.toISOString(),
		lastUsedAt: row.last_used_at?.toISOString() ?? null,
		revokedAt: row.revoked_at?.toISOString() ?? null
	};
}

const UNIQUE_VIOLATION = "23505";

export class UserStore {
	constructor(private readonly db: Database) {}

	/** Returns undefined when the email is taken. */
	async createUser(email: string, passwordHash: string): Promise<UserRow | undefined> {
		try {
			const [row] = await this.db.query<UserRow>(
				"INSERT INTO users (email, password_hash) VALUES ($1, $2) RETURNING id, email, password_hash, roles, created_at",
				[email, passwordHash]
			);
			return row;
		} catch (err) {
			if ((err as Partial<DatabaseError>).code === UNIQUE_VIOLATION) return undefined;
			throw err;
		}
	}

	async userByEmail(email: string): Promise<UserRow | undefined> {
		const [row] = await this.db.query<UserRow>("SELECT id, email, password_hash, roles, created_at FROM users WHERE lower(email) = lower($1)", [email]);
		return row;
	}

	async userById(id: string): Promise<UserRow | undefined> {
		const [row] = await this.db.query<UserRow>("SELECT id, email, password_hash, roles, created_at FROM users WHERE id = $1", [id]);
		return row;
	}

	/** Newest first, keyset-paginated on (created_at, id). */
	async listUsers(limit: number, after?: { createdAt: string; id: string }): Promise<UserRow[]> {
		return after
			? this.db.query<UserRow>(
					`SELECT id, email, password_hash, roles, created_at FROM users
					 WHERE (created_at, id) < ($1::timestamptz, $2::uuid) ORDER BY created_at DESC, id DESC LIMIT $3`,
					[after.createdAt, after.id, limit]
				)
			: this.db.query<UserRow>("SELECT id, email, password_hash, roles, created_at FROM users ORDER BY created_at DESC, id DESC LIMIT $1", [limit]);
	}

	async setRoles(userId: string, roles: string[]): Promise<UserRow | undefined> {
		const [row] = await this.db.query<UserRow>(
			"UPDATE users SET roles = $2, updated_at = now() WHERE id = $1 RETURNING id, email, password_hash, roles, created_at",
			[userId, roles]
		);
		return row;
	}

	/** A new session with its first refresh token. */
	async createSession(userId: string, refreshHash: string, expiresAt: Date): Promise<string> {
		return this.db.transaction(async tx => {
			const [session] = await tx.query<{ id: string }>("INSERT INTO sessions (user_id) VALUES ($1) RETURNING id", [userId]);
			await tx.query("INSERT INTO refresh_tokens (session_id, token_hash, expires_at) VALUES ($1, $2, $3)", [session.id, refreshHash, expiresAt]);
			return session.id;
		});
	}

	/**
	 * Rotates a refresh token inside one transaction, with the token row locked so two
	 * concurrent refreshes with the same token cannot both succeed.
	 * Returns what happened; the caller turns it into tokens or an error.
	 */
	async rotateRefreshToken(
		presentedHash: string,
		next: { hash: string; expiresAt: Date }
	): Promise<
		| { outcome: "rotated"; row: RefreshTokenRow }
		| { outcome: "unknown" }
		| { outcome: "expired" | "revoked"; row: RefreshTokenRow }
		| { outcome: "reused"; row: RefreshTokenRow }
	> {
		return this.db.transaction(async tx => {
			const [row] = await tx.query<RefreshTokenRow>(
				`SELECT rt.id, rt.session_id, rt.expires_at, rt.used_at, s.revoked_at AS session_revoked_at, s.user_id, u.roles
				 FROM refresh_tokens rt JOIN sessions s ON s.id = rt.session_id JOIN users u ON u.id = s.user_id
				 WHERE rt.token_hash = $1 FOR UPDATE OF rt, s`,
				[presentedHash]
			);
			if (!row) return { outcome: "unknown" as const };
			if (row.session_revoked_at) return { outcome: "revoked" as const, row };
			if (row.used_at) {
				// A rotated token came back: someone holds a copy. End the whole family.
				await tx.query("UPDATE sessions SET revoked_at = now(), revoked_reason = 'refresh token reuse' WHERE id = $1", [row.session_id]);
				return { outcome: "reused" as const, row };
			}
			if (row.expires_at.getTime() <= Date.now()) return { outcome: "expired" as const, row };
			await tx.query("UPDATE refresh_tokens SET used_at = now() WHERE id = $1", [row.id]);
			await tx.query("INSERT INTO refresh_tokens (session_id, token_hash, expires_at) VALUES ($1, $2, $3)", [row.session_id, next.hash, next.expiresAt]);
			return { outcome: "rotated" as const, row };
		});
	}

	/** Revokes the session a refresh token belongs to; returns its id and owner. */
	async revokeSessionByRefreshHash(hash: string, reason: string): Promise<{ id: string; user_id: string } | undefined> {
		const [row] = await this.db.query<{ id: string; user_id: string }>(
			`UPDATE sessions SET revoked_at = coalesce(revoked_at, now()), revoked_reason = coalesce(revoked_reason, $2)
			 WHERE id = (SELECT session_id FROM refresh_tokens WHERE token_hash = $1) RETURNING id, user_id`,
			[hash, reason]
		);
		return row;
	}

	async revokeSession(sessionId: string, userId: string, reason: string): Promise<boolean> {
		const rows = await this.db.query<{ id: string }>(
			`UPDATE sessions SET revoked_at = coalesce(revoked_at, now()), revoked_reason = coalesce(revoked_reason, $3)
			 WHERE id = $1 AND user_id = $2 RETURNING id`,
			[sessionId, userId, reason]
		);
		return rows.length > 0;
	}

	async sessionActive(sessionId: string): Promise<boolean> {
		const [row] = await this.db.query<{ revoked_at: Date | null }>("SELECT revoked_at FROM sessions WHERE id = $1", [sessionId]);
		return row !== undefined && row.revoked_at === null;
	}

	async createApiKey(userId: string, name: string, prefix: string, hash: string): Promise<ApiKeyRow> {
		const [row] = await this.db.query<ApiKeyRow>(
			`INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4)
			 RETURNING id, user_id, name, prefix, created_at, last_used_at, revoked_at`,
			[userId, name, prefix, hash]
		);
		return row;
	}

	async listApiKeys(userId: string): Promise<ApiKeyRow[]> {
		return this.db.query<ApiKeyRow>(
			`SELECT id, user_id, name, prefix, created_at, last_used_at, revoked_at FROM api_keys
			 WHERE user_id = $1 ORDER BY created_at DESC, id DESC`,
			[userId]
		);
	}

	/** Revokes one of the user's keys; undefined when it is not theirs or does not exist. */
	async revokeApiKey(userId: string, keyId: string): Promise<{ key_hash: string } | undefined> {
		const [row] = await this.db.query<{ key_hash: string }>(
			`UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 AND user_id = $2 RETURNING key_hash`,
			[keyId, userId]
		);
		return row;
	}

	async activeApiKey(hash: string): Promise<{ id: string; user_id: string; roles: string[] } | undefined> {
		const [row] = await this.db.query<{ id: string; user_id: string; roles: string[] }>(
			`SELECT k.id, k.user_id, u.roles FROM api_keys k JOIN users u ON u.id = k.user_id
			 WHERE k.key_hash = $1 AND k.revoked_at IS NULL`,
			[hash]
		);
		return row;
	}

	/** At most once a minute per key, so resolving a key stays a read. */
	async touchApiKey(id: string): Promise<void> {
		await this.db.query("UPDATE api_keys SET last_used_at = now() WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')", [
			id
		]);
	}

	// Account status: what a credential's owner may do now, read on every resolve (cached by the service).

	/** The user's roles and status as the record says now; undefined when there is no such user. */
	async userStatus(userId: string): Promise<UserStatus | undefined> {
		const [row] = await this.db.query<UserStatus>("SELECT roles, disabled_at FROM users WHERE id = $1", [userId]);
		return row;
	}

	/** Disables (ending every open session, in the same statement) or re-enables an account; undefined when there is no such user. */
	async setDisabled(userId: string, disabled: boolean): Promise<(UserRow & UserStatus) | undefined> {
		const [row] = await this.db.query<UserRow & UserStatus>(
			`WITH u AS (
				UPDATE users SET disabled_at = CASE WHEN $2 THEN coalesce(disabled_at, now()) END, updated_at = now() WHERE id = $1
				RETURNING id, email, password_hash, roles, created_at, disabled_at
			), s AS (
				UPDATE sessions SET revoked_at = now(), revoked_reason = 'account disabled' WHERE $2 AND revoked_at IS NULL AND user_id IN (SELECT id FROM u)
			)
			SELECT * FROM u`,
			[userId, disabled]
		);
		return row;
	}
}
