/**
 * Token budgets per user (user_quotas). A reservation holds tokens from before a model call until
 * its real usage is known, so concurrent requests cannot overspend; quota_resets records each
 * scheduled reset run (one node runs it, under an advisory lock).
 */
import type { MigrationClient } from "../lib/db/migrate";

export async function up(db: MigrationClient): Promise<void> {
	await db.query(`
		CREATE TABLE user_quotas (
			user_id uuid PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
			tokens_used bigint NOT NULL DEFAULT 0,
			tokens_reserved bigint NOT NULL DEFAULT 0,
			tokens_limit bigint NOT NULL,
			period text NOT NULL CHECK (period IN ('day', 'week', 'month')),
			reset_at timestamptz NOT NULL,
			updated_at timestamptz NOT NULL DEFAULT now(),
			CHECK (tokens_used >= 0 AND tokens_reserved >= 0 AND tokens_limit >= 0)
		)
	`);
	// The reset schedule finds due rows by it.
	await db.query("CREATE INDEX user_quotas_reset_idx ON user_quotas (reset_at)");
	await db.query(`
		CREATE TABLE quota_reservations (
			id text PRIMARY KEY,
			user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
			tokens bigint NOT NULL CHECK (tokens >= 0),
			created_at timestamptz NOT NULL DEFAULT now()
		)
	`);
	await db.query("CREATE INDEX quota_reservations_created_idx ON quota_reservations (created_at)");
	await db.query(`
		CREATE TABLE quota_resets (
			id bigserial PRIMARY KEY,
			node_id text NOT NULL,
			users_reset integer NOT NULL,
			ran_at timestamptz NOT NULL DEFAULT now()
		)
	`);
}

export async function down(db: MigrationClient): Promise<void> {
	await db.query("DROP TABLE quota_resets");
	await db.query("DROP TABLE quota_reservations");
	await db.query("DROP TABLE user_quotas");
}
