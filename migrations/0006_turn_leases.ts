/**
 * Leases of the processes running chat turns. Every conversation service instance renews its row
 * while it lives; an answer left `streaming` whose owner's lease has run out (a killed process,
 * whatever node id it comes back with) is finished by a live node.
 */
import type { MigrationClient } from "../lib/db/migrate";

export async function up(db: MigrationClient): Promise<void> {
	await db.query(`
		CREATE TABLE turn_leases (
			instance_id text PRIMARY KEY,
			node_id text NOT NULL,
			lease_until timestamptz NOT NULL
		)
	`);
}

export async function down(db: MigrationClient): Promise<void> {
	await db.query("DROP TABLE turn_leases");
}
