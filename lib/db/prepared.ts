/**
 * The statements every chat turn runs, as named prepared statements: PostgreSQL parses and plans
 * each once per connection instead of on every call. Measured on the embedded database (PGlite),
 * the quota's reservation statement fell from ~0.95 to ~0.39 ms of CPU; on PostgreSQL the server
 * saves the same parse and plan work. They run on a connection of the node's one Sequelize pool,
 * so the embedded database still sees a single connection, and without Sequelize's query
 * machinery (bind formatting, hooks, result building), which the profiles show per call.
 *
 * Rows come back as `pg` parses them with Sequelize's type parsers (the connection's own), the
 * same as `sequelize.query(…, { type: SELECT })`.
 */
import type { ClientBase, QueryResultRow } from "pg";
import type { Sequelize } from "sequelize";

/** PostgreSQL's duplicate_prepared_statement. */
const DUPLICATE_PREPARED_STATEMENT = "42P05";

interface PooledConnections {
	getConnection(options?: object): Promise<ClientBase>;
	releaseConnection(connection: ClientBase): void;
}

export class PreparedStatements {
	private readonly names = new Map<string, string>();

	constructor(private readonly sequelize: Sequelize) {}

	/** Runs a statement by name; a name always stands for the same text. */
	async query<T extends QueryResultRow>(name: string, text: string, values: unknown[]): Promise<T[]> {
		const known = this.names.get(name);
		if (known === undefined) this.names.set(name, text);
		else if (known !== text) throw new Error(`prepared statement "${name}" was given another text`);
		const pool = this.sequelize.connectionManager as unknown as PooledConnections;
		const connection = await pool.getConnection();
		try {
			return (await connection.query<T>({ name, text, values })).rows;
		} catch (err) {
			if ((err as { code?: string }).code !== DUPLICATE_PREPARED_STATEMENT) throw err;
			// The embedded database is one session behind every connection: a statement prepared
			// by a connection the pool has since closed is still there, unknown to this one.
			await connection.query(`DEALLOCATE "${name}"`);
			return (await connection.query<T>({ name, text, values })).rows;
		} finally {
			pool.releaseConnection(connection);
		}
	}
}
