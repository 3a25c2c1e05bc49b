/**
 * The node's database: the embedded PGlite server or the configured PostgreSQL, migrated, with
 * one Sequelize instance shared by every service on the node (one pool per process).
 */
import { Sequelize } from "sequelize";
import { startEmbeddedDatabase } from "./embedded";
import { migrate } from "./migrate";

export interface Database {
	url: string;
	embedded: boolean;
	sequelize: Sequelize;
	/** Resolves when the database answers a trivial query within the timeout. */
	ping(timeoutMs?: number): Promise<void>;
	close(): Promise<void>;
}

export interface OpenDatabaseOptions {
	/** PostgreSQL URL; undefined starts the embedded database under dataDir. */
	url?: string;
	dataDir: string;
	log?: (msg: string) => void;
	poolMax?: number;
}

export async function openDatabase(opts: OpenDatabaseOptions): Promise<Database> {
	const embedded = opts.url === undefined ? await startEmbeddedDatabase(opts.dataDir) : undefined;
	const url = embedded?.url ?? (opts.url as string);
	try {
		await migrate(url, opts.log);
	} catch (err) {
		await embedded?.close();
		throw err;
	}
	const sequelize = new Sequelize(url, {
		dialect: "postgres",
		logging: false,
		// The embedded server is one PostgreSQL session: one connection keeps transactions whole.
		pool: { max: embedded ? 1 : (opts.poolMax ?? 10), min: 0, idle: 10_000, acquire: 30_000 }
	});
	return {
		url,
		embedded: embedded !== undefined,
		sequelize,
		async ping(timeoutMs = 2000) {
			await withTimeout(sequelize.query("SELECT 1"), timeoutMs, "database ping timed out");
		},
		async close() {
			await sequelize.close();
			await embedded?.close();
		}
	};
}

export function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
	let timer: NodeJS.Timeout | undefined;
	const timeout = new Promise<never>((_, reject) => {
		timer = setTimeout(() => reject(new Error(message)), ms);
	});
	return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
