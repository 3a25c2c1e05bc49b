/**
 * Versioned schema migrations (umzug), run at start under a PostgreSQL advisory lock so that N
 * nodes starting together apply each migration exactly once. Each migration runs in its own
 * transaction on one client of the node's Database pool, together with its bookkeeping row.
 */
import { pathToFileURL } from "node:url";
import type { ClientBase } from "pg";
import { Umzug, type UmzugStorage } from "umzug";
import { MIGRATIONS } from "../app-files";
import { inTransaction, type Database } from "./database";

export type MigrationClient = ClientBase;

/** What a migration file exports. */
export interface MigrationModule {
	up(db: MigrationClient): Promise<void>;
	down?(db: MigrationClient): Promise<void>;
}

const MIGRATIONS_TABLE = "chatmesh_migrations";
// Any constant shared by every node; hashtext keeps it readable.
const LOCK_KEY = "chatmesh:migrations";

export interface MigrationResult {
	applied: string[];
	/** Milliseconds spent waiting for another node's migration run. */
	waitedMs: number;
}

const storage: UmzugStorage<MigrationClient> = {
	async executed({ context: db }) {
		const { rows } = await db.query<{ name: string }>(`SELECT name FROM ${MIGRATIONS_TABLE} ORDER BY name`);
		return rows.map(r => r.name);
	},
	// Bookkeeping happens inside each migration's own transaction (see resolve below), so a
	// migration and its row commit or roll back together; umzug's own calls have nothing to do.
	async logMigration() {},
	async unlogMigration() {}
};

/** Applies every pending migration in name order. Safe to call from many nodes at once. */
export async function migrate(database: Database, log: (msg: string) => void = () => {}): Promise<MigrationResult> {
	// One client holds the session-level lock from the first statement to the unlock.
	return database.withClient(async db => {
		const lockStart = Date.now();
		await db.query("SELECT pg_advisory_lock(hashtext($1))", [LOCK_KEY]);
		const waitedMs = Date.now() - lockStart;
		try {
			await db.query(`CREATE TABLE IF NOT EXISTS ${MIGRATIONS_TABLE} (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`);
			const umzug = new Umzug<MigrationClient>({
				migrations: {
					glob: [MIGRATIONS.pattern, { cwd: MIGRATIONS.dir }],
					resolve: ({ name, path: file, context }) => ({
						name: stem(name),
						up: () =>
							inTransaction(context, async () => {
								await (await load(file)).up(context);
								await context.query(`INSERT INTO ${MIGRATIONS_TABLE} (name) VALUES ($1)`, [stem(name)]);
							}),
						down: () =>
							inTransaction(context, async () => {
								const mod = await load(file);
								if (!mod.down) throw new Error(`migration ${name} cannot be reverted`);
								await mod.down(context);
								await context.query(`DELETE FROM ${MIGRATIONS_TABLE} WHERE name = $1`, [stem(name)]);
							})
					})
				},
				context: db,
				storage,
				logger: undefined
			});
			const applied = await umzug.up();
			for (const m of applied) log(`applied migration ${m.name}`);
			return { applied: applied.map(m => m.name), waitedMs };
		} finally {
			await db.query("SELECT pg_advisory_unlock(hashtext($1))", [LOCK_KEY]);
		}
	});
}

// Source (.ts) and build (.js) record the same names.
const stem = (file: string) => file.replace(/\.[jt]s$/, "");

async function load(file: string | undefined): Promise<MigrationModule> {
	if (!file) throw new Error("migration without a file");
	return (await import(pathToFileURL(file).href)) as MigrationModule;
}
