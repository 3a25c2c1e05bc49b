/**
 * The node's database: the embedded PGlite server or the configured PostgreSQL, migrated, behind
 * one Database (one pg pool per process) shared by every service on the node.
 */
import { Database } from "./database";
import { startEmbeddedDatabase } from "./embedded";
import { migrate } from "./migrate";

export { Database, withTimeout, type PreparedStatement, type TransactionClient } from "./database";

export interface OpenDatabaseOptions {
	/** PostgreSQL URL; undefined starts the embedded database under dataDir. */
	url?: string;
	dataDir: string;
	log?: (msg: string) => void;
	poolMax?: number;
	/** How long an unused pool connection stays open. */
	idleTimeoutMs?: number;
}

export async function openDatabase(opts: OpenDatabaseOptions): Promise<Database> {
	const embedded = opts.url === undefined ? await startEmbeddedDatabase(opts.dataDir) : undefined;
	const url = embedded?.url ?? (opts.url as string);
	const database = new Database({
		url,
		embedded: embedded !== undefined,
		poolMax: opts.poolMax,
		idleTimeoutMs: opts.idleTimeoutMs,
		onIdleError: err => opts.log?.(`database connection lost while idle: ${err.message}`),
		onClose: embedded ? () => embedded.close() : undefined
	});
	try {
		await migrate(database, opts.log);
	} catch (err) {
		await database.close();
		throw err;
	}
	return database;
}
