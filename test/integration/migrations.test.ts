import fs from "node:fs/promises";
import path from "node:path";
import pg from "pg";
import { beforeAll, describe, expect, it } from "vitest";
import { Database } from "../../lib/db";
import { migrate } from "../../lib/db/migrate";
import { withProcesses } from "../helpers/fixtures";
import { clusterEnv, REPO_ROOT, uniqueNamespace, type TestDatabase } from "../helpers/infra";
import { spawnNode } from "../helpers/processes";

const migrationNames = (await fs.readdir(path.join(REPO_ROOT, "migrations")))
	.filter(f => /^\d.*\.ts$/.test(f))
	.map(f => f.replace(/\.ts$/, ""))
	.sort();

async function appliedRows(url: string): Promise<string[]> {
	const client = new pg.Client({ connectionString: url });
	await client.connect();
	try {
		const { rows } = await client.query<{ name: string }>("SELECT name FROM chatmesh_migrations ORDER BY name");
		return rows.map(r => r.name);
	} finally {
		await client.end();
	}
}

describe("migrations under an advisory lock", () => {
	const inProcess = withProcesses({ label: "migrate_a", database: true });
	const cluster = withProcesses({ label: "migrate_b", database: true });
	const { procs } = cluster;
	let first: TestDatabase;
	let second: TestDatabase;

	beforeAll(() => {
		({ db: first } = inProcess);
		({ db: second } = cluster);
	});

	it("applies each migration once when four runs start together in one process", async () => {
		// Four pools, as four nodes would have.
		const pools = [1, 2, 3, 4].map(() => new Database({ url: first.url, embedded: false }));
		try {
			const results = await Promise.all(pools.map(db => migrate(db)));
			const applied = results.flatMap(r => r.applied).sort();
			expect(applied).toEqual(migrationNames);
			expect(await appliedRows(first.url)).toEqual(migrationNames);
			// A later run finds nothing to do.
			expect((await migrate(pools[0])).applied).toEqual([]);
		} finally {
			await Promise.all(pools.map(db => db.close()));
		}
	});

	it("applies each migration once when two node processes start at the same moment", async () => {
		const env = clusterEnv(uniqueNamespace("migrate"), second.url);
		const a = spawnNode({ ...env, SERVICES: "gateway", NODE_ID: "mig-a" });
		const b = spawnNode({ ...env, SERVICES: "gateway", NODE_ID: "mig-b" });
		procs.push(a, b);
		await Promise.all([a.httpPort(), b.httpPort()]);
		for (const name of migrationNames) {
			const line = new RegExp(`applied migration ${name}\\b`, "g");
			const count = (a.output().match(line)?.length ?? 0) + (b.output().match(line)?.length ?? 0);
			expect(count, name).toBe(1);
		}
		expect(await appliedRows(second.url)).toEqual(migrationNames);
		// The schema really exists.
		const client = new pg.Client({ connectionString: second.url });
		await client.connect();
		const { rows } = await client.query("SELECT to_regclass('public.users') AS users");
		await client.end();
		expect(rows[0].users).toBe("users");
	}, 60_000);
});
