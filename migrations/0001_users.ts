/** Users: the owner of every other row. Identity fields are extended by later migrations. */
import type { MigrationClient } from "../lib/db/migrate";

export async function up(db: MigrationClient): Promise<void> {
	await db.query(`
		CREATE TABLE users (
			id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
			email text NOT NULL,
			password_hash text NOT NULL,
			roles text[] NOT NULL DEFAULT ARRAY['user'],
			created_at timestamptz NOT NULL DEFAULT now(),
			updated_at timestamptz NOT NULL DEFAULT now()
		)
	`);
	// Emails are unique regardless of case.
	await db.query("CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email))");
}

export async function down(db: MigrationClient): Promise<void> {
	await db.query("DROP TABLE users");
}
