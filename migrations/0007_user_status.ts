/**
 * An account an admin disabled: its sign-ins, tokens, API keys and open sockets are refused while
 * `disabled_at` is set.
 */
import type { MigrationClient } from "../lib/db/migrate";

export async function up(db: MigrationClient): Promise<void> {
	await db.query("ALTER TABLE users ADD COLUMN disabled_at timestamptz");
}

export async function down(db: MigrationClient): Promise<void> {
	await db.query("ALTER TABLE users DROP COLUMN disabled_at");
}
