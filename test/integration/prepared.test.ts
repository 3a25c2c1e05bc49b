import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDatabase, type Database } from "../../lib/db";
import { createTestDatabase, type TestDatabase } from "../helpers/infra";
import { waitUntil } from "../helpers/processes";

// The node's Database on both databases: the hot path's prepared statements across the pool
// closing its connection (the embedded database, PGlite, keeps one session behind every
// connection, so a statement the closed connection prepared is still there when the next
// connection prepares it again), transactions, and the JS types rows come back with.

const SQL = "SELECT $1::int + 1 AS n";

describe.each([
	["embedded PGlite", "embedded"],
	["PostgreSQL", "postgres"]
] as const)("the database on %s", (_label, kind) => {
	let db: Database;
	let pgDb: TestDatabase | undefined;
	let dataDir: string | undefined;

	beforeAll(async () => {
		if (kind === "postgres") pgDb = await createTestDatabase("prepared");
		else dataDir = mkdtempSync(path.join(os.tmpdir(), "chatmesh-prepared-"));
		// A short idle timeout lets the pool close its connections while the test waits.
		db = await openDatabase({ url: pgDb?.url, dataDir: dataDir ?? os.tmpdir(), idleTimeoutMs: 50 });
		await db.query("CREATE TABLE tx_probe (id int PRIMARY KEY)");
	}, 60_000);
	afterAll(async () => {
		await db?.close();
		await pgDb?.drop();
		if (dataDir) rmSync(dataDir, { recursive: true, force: true });
	});

	const plusOne = (n: number) => db.query<{ n: number }>({ name: "test.plus-one", text: SQL, values: [n] });
	const probeIds = async () => (await db.query<{ id: number }>("SELECT id FROM tx_probe ORDER BY id")).map(r => r.id);

	it("answers a prepared statement by name, again after the pool closed the connection that prepared it", async () => {
		expect(await plusOne(1)).toEqual([{ n: 2 }]);
		expect(await plusOne(2)).toEqual([{ n: 3 }]);
		await waitUntil(async () => db.connections.total === 0, 5000, 20);
		expect(await plusOne(3)).toEqual([{ n: 4 }]);
	});

	it("refuses one name for two texts", async () => {
		await db.query({ name: "test.one-name", text: "SELECT 1 AS a", values: [] });
		await expect(db.query({ name: "test.one-name", text: "SELECT 2 AS a", values: [] })).rejects.toThrow(/another text/);
	});

	it("commits a transaction's statements together", async () => {
		const result = await db.transaction(async tx => {
			await tx.query("INSERT INTO tx_probe (id) VALUES ($1), ($2)", [1, 2]);
			return (await tx.query<{ n: number }>("SELECT count(*)::int AS n FROM tx_probe"))[0].n;
		});
		expect(result).toBe(2);
		expect(await probeIds()).toEqual([1, 2]);
		await db.query("DELETE FROM tx_probe");
	});

	it("rolls a transaction back when its work throws, leaving nothing behind", async () => {
		await expect(
			db.transaction(async tx => {
				await tx.query("INSERT INTO tx_probe (id) VALUES (10)");
				throw new Error("work failed");
			})
		).rejects.toThrow("work failed");
		// On the embedded database this is the same session: a transaction left open would show the row.
		expect(await probeIds()).toEqual([]);
	});

	it("rolls a transaction back when one of its statements fails, and the connection serves the next caller", async () => {
		await expect(
			db.transaction(async tx => {
				await tx.query("INSERT INTO tx_probe (id) VALUES (20)");
				await tx.query("INSERT INTO tx_probe (id) VALUES (20)");
			})
		).rejects.toMatchObject({ code: "23505" });
		expect(await probeIds()).toEqual([]);
		expect(await plusOne(41)).toEqual([{ n: 42 }]);
	});

	it("returns rows with the types the stores rely on, in a UTC session", async () => {
		const [row] = await db.query(
			`SELECT now() AS at, 9007199254740993::bigint AS big, 7::int AS n, 2.50::numeric AS num, '{"a":[1]}'::jsonb AS doc,
			 ARRAY['user','admin'] AS roles, true AS flag, current_setting('TimeZone') AS zone, '2026-01-31'::date AS day`
		);
		expect(row.at).toBeInstanceOf(Date);
		expect(row).toMatchObject({ big: "9007199254740993", n: 7, num: "2.50", doc: { a: [1] }, roles: ["user", "admin"], flag: true, zone: "UTC" });
		// A date has no time zone to be read in: it stays its text.
		expect(row.day).toBe("2026-01-31");
	});
});
