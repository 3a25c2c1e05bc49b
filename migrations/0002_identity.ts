/**
 * Sessions, refresh tokens and API keys. A session is one sign-in: its refresh tokens form a
 * family, each used once; presenting a used one again revokes the whole session. Secrets are
 * stored only as SHA-256 hashes (they are long random strings, so a fast hash suffices).
 */
import type { MigrationClient } from "../lib/db/migrate";

export async function up(db: MigrationClient): Promise<void> {
	await db.query(`
		CREATE TABLE sessions (
			id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
			user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
			created_at timestamptz NOT NULL DEFAULT now(),
			revoked_at timestamptz,
			revoked_reason text
		)
	`);
	await db.query("CREATE INDEX sessions_user_idx ON sessions (user_id)");
	await db.query(`
		CREATE TABLE refresh_tokens (
			id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
			session_id uuid NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
			token_hash text NOT NULL UNIQUE,
			created_at timestamptz NOT NULL DEFAULT now(),
			expires_at timestamptz NOT NULL,
			used_at timestamptz
		)
	`);
	await db.query("CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id)");
	await db.query(`
		CREATE TABLE api_keys (
			id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
			user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
			name text NOT NULL,
			prefix text NOT NULL,
			key_hash text NOT NULL UNIQUE,
			created_at timestamptz NOT NULL DEFAULT now(),
			last_used_at timestamptz,
			revoked_at timestamptz
		)
	`);
	await db.query("CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at DESC)");
}

export async function down(db: MigrationClient): Promise<void> {
	await db.query("DROP TABLE api_keys");
	await db.query("DROP TABLE refresh_tokens");
	await db.query("DROP TABLE sessions");
}
