import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase, type Database } from "../../lib/db";
import { PreparedStatements } from "../../lib/db/prepared";
import { createTestDatabase, type TestDatabase } from "../helpers/infra";

// The hot path's prepared statements on both databases, across the pool closing its connection:
// the embedded database (PGlite) keeps one session behind every connection, so a statement the
// closed connection prepared is still there when the next connection prepares it again.

/** Closes every connection of the node's Sequelize pool, as its idle timeout does. */
async function dropPoolConnections(db: Database): Promise<void> {
	const pool = (db.sequelize.connectionManager as unknown as { pool: { destroyAllNow(): Promise<void> } }).pool;
	await pool.destroyAllNow();
}

const SQL = "SELECT $1::int + 1 AS n";

describe.each([
	["embedded PGlite", "embedded"],
	["PostgreSQL", "postgres"]
] as const)("prepared statements on %s", (_label, kind) => {
	let db: Database;
	let pgDb: TestDatabase | undefined;
	let dataDir: string | undefined;

	beforeAll(async () => {
		if (kind === "postgres") pgDb = await createTestDatabase("prepared");
		else dataDir = mkdtempSync(path.join(os.tmpdir(), "chatmesh-prepared-"));
		db = await openDatabase({ url: pgDb?.url, dataDir: dataDir ?? os.tmpdir() });
	}, 60_000);
	afterAll(async () => {
		await db?.close();
		await pgDb?.drop();
		if (dataDir) rmSync(dataDir, { recursive: true, force: true });
	});

	it("answers by name, again after the pool closed the connection that prepared it", async () => {
		const prepared = new PreparedStatements(db.sequelize);
		expect(await prepared.query<{ n: number }>("test.plus-one", SQL, [1])).toEqual([{ n: 2 }]);
		expect(await prepared.query<{ n: number }>("test.plus-one", SQL, [2])).toEqual([{ n: 3 }]);
		await dropPoolConnections(db);
		expect(await prepared.query<{ n: number }>("test.plus-one", SQL, [3])).toEqual([{ n: 4 }]);
		// A second store on the same pool with the same name and text shares the statement.
		expect(await new PreparedStatements(db.sequelize).query<{ n: number }>("test.plus-one", SQL, [4])).toEqual([{ n: 5 }]);
	});

	it("refuses one name for two texts", async () => {
		const prepared = new PreparedStatements(db.sequelize);
		await prepared.query("test.one-name", "SELECT 1 AS a", []);
		await expect(prepared.query("test.one-name", "SELECT 2 AS a", [])).rejects.toThrow(/another text/);
	});
});
