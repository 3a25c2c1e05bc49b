/**
 * The one way chatmesh reaches PostgreSQL: a `pg` pool per process, plain parameterised queries,
 * named prepared statements for the hot path, and transactions on one client. Every service's
 * store (services/<name>/store.ts) and the migrations are written against it.
 *
 * Rows come back as `pg` parses them: timestamptz as Date, int2/int4/float as number, int8 and
 * numeric as string, json/jsonb parsed, arrays as arrays, and date as its 'YYYY-MM-DD' text: the
 * types Sequelize's parsers produced before. Each session runs in UTC, as Sequelize's did, so the
 * months date_trunc cuts (message partitions) and timestamps read without a zone mean the same on
 * every server.
 */
import pg, { type ClientBase, type PoolClient, type QueryResultRow } from "pg";
import { runPrepared, StatementNames, type PreparedStatement } from "./prepared";

export type { PreparedStatement } from "./prepared";

/** What a transaction's work runs its statements on: the transaction's own client. */
export interface TransactionClient {
	query<T extends QueryResultRow = QueryResultRow>(text: string, values?: readonly unknown[]): Promise<T[]>;
}

export interface DatabaseOptions {
	url: string;
	/** The embedded PGlite server: one PostgreSQL session behind every connection. */
	embedded: boolean;
	/** Connections on PostgreSQL; the embedded database always gets one. */
	poolMax?: number;
	/** How long an unused connection stays open. */
	idleTimeoutMs?: number;
	/** Called with errors of idle connections (a restarted server, a dropped link). */
	onIdleError?: (err: Error) => void;
	/** Closes what the database runs on (the embedded server), after the pool. */
	onClose?: () => Promise<void>;
}

/** A date has no time zone: kept as text rather than read as a local midnight, as Sequelize did. */
const typeParsers = new pg.TypeOverrides();
typeParsers.setTypeParser(pg.types.builtins.DATE, "text", (value: string) => value);

export class Database {
	readonly url: string;
	readonly embedded: boolean;
	private readonly pool: pg.Pool;
	private readonly names = new StatementNames();
	private readonly onClose?: () => Promise<void>;

	constructor(opts: DatabaseOptions) {
		this.url = opts.url;
		this.embedded = opts.embedded;
		this.onClose = opts.onClose;
		this.pool = new pg.Pool({
			connectionString: opts.url,
			application_name: "chatmesh",
			// The embedded server is one PostgreSQL session: one connection keeps transactions whole.
			max: opts.embedded ? 1 : (opts.poolMax ?? 10),
			idleTimeoutMillis: opts.idleTimeoutMs ?? 10_000,
			connectionTimeoutMillis: 30_000,
			types: typeParsers,
			// Before a new connection's first use; a failure reaches the caller and closes the connection.
			verify: (client, done) => {
				client.query("SET TIME ZONE 'UTC'").then(() => done(), done);
			}
		});
		// Without a listener an idle connection's error would end the process; the pool drops it.
		this.pool.on("error", err => opts.onIdleError?.(err));
	}

	/** The pool's connections and the queries waiting for one (read for the metrics). */
	get poolStats(): { total: number; idle: number; waiting: number } {
		return { total: this.pool.totalCount, idle: this.pool.idleCount, waiting: this.pool.waitingCount };
	}

	/** A parameterised statement, or a named prepared one (`{name, text, values}`) for the hot path. */
	query<T extends QueryResultRow = QueryResultRow>(text: string, values?: readonly unknown[]): Promise<T[]>;
	query<T extends QueryResultRow = QueryResultRow>(statement: PreparedStatement): Promise<T[]>;
	async query<T extends QueryResultRow>(statement: string | PreparedStatement, values: readonly unknown[] = []): Promise<T[]> {
		if (typeof statement === "string") return (await this.pool.query<T>(statement, [...values])).rows;
		this.names.check(statement);
		return this.withClient(client => runPrepared<T>(client, statement));
	}

	/**
	 * Runs `work` between BEGIN and COMMIT on one client, and rolls back when it throws. Its
	 * statements go through the client it is given: on the embedded database the pool's only
	 * connection is the transaction's, so a query through the Database itself would wait forever.
	 */
	async transaction<T>(work: (tx: TransactionClient) => Promise<T>): Promise<T> {
		return this.withClient(client =>
			inTransaction(client, () =>
				work({ query: async <R extends QueryResultRow>(text: string, values: readonly unknown[] = []) => (await client.query<R>(text, [...values])).rows })
			)
		);
	}

	/**
	 * One client for a sequence of statements that must share a session (the migrations' advisory
	 * lock). The pool itself closes a client whose connection broke.
	 */
	async withClient<T>(work: (client: PoolClient) => Promise<T>): Promise<T> {
		const client = await this.pool.connect();
		try {
			return await work(client);
		} finally {
			client.release();
		}
	}

	/** Resolves when the database answers a trivial query within the timeout. */
	async ping(timeoutMs = 2000): Promise<void> {
		await withTimeout(this.query("SELECT 1"), timeoutMs, "database ping timed out");
	}

	/** Open connections, and how many of them sit idle. */
	get connections(): { total: number; idle: number } {
		return { total: this.pool.totalCount, idle: this.pool.idleCount };
	}

	async close(): Promise<void> {
		await this.pool.end();
		await this.onClose?.();
	}
}

/** BEGIN, the work, COMMIT on one client; ROLLBACK when the work throws. */
export async function inTransaction<T>(client: ClientBase, work: () => Promise<T>): Promise<T> {
	await client.query("BEGIN");
	try {
		const result = await work();
		await client.query("COMMIT");
		return result;
	} catch (err) {
		// Should ROLLBACK fail, the connection is broken: its error is the one to report, and pg
		// marks the client so that the pool closes it instead of handing it out again.
		await client.query("ROLLBACK");
		throw err;
	}
}

export function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
	let timer: NodeJS.Timeout | undefined;
	const timeout = new Promise<never>((_, reject) => {
		timer = setTimeout(() => reject(new Error(message)), ms);
	});
	return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
