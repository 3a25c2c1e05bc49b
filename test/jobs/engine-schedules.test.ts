/**
 * Maintenance schedules with three jobs nodes up on the shared NATS and PostgreSQL: a schedule
 * due every second runs once per tick across the cluster (one node's claim in schedule_runs, one
 * run logged), and does its work (expired refresh tokens go, live ones and soft-deleted
 * conversations within the retention period stay; older ones go).
 */
import { afterAll, describe, expect, it } from "vitest";
import { withProcesses } from "../helpers/fixtures";
import { clusterEnv, queryDb, uniqueNamespace } from "../helpers/infra";
import { waitFor } from "../helpers/wait";
import { deleteJobStreams } from "./engine-jetstream";

const cluster = withProcesses({ label: "jobs-schedules", database: true });

const EVERY_SECOND = "* * * * * *";
const namespace = uniqueNamespace("jobs-schedules");
afterAll(() => deleteJobStreams(namespace));

describe("maintenance schedules on three jobs nodes", () => {
	it("runs each tick of a schedule exactly once across the cluster", { timeout: 80_000 }, async () => {
		const env = {
			...clusterEnv(namespace, cluster.db.url),
			SERVICES: "jobs",
			RETENTION_DAYS: "7",
			JOBS_SCHEDULES: JSON.stringify({
				"refresh-token-purge": EVERY_SECOND,
				"conversation-purge": EVERY_SECOND,
				"quota-reset": "off",
				"message-partitions": "off",
				"job-purge": "off"
			})
		};
		const nodes = ["s1", "s2", "s3"].map(id => cluster.spawn({ ...env, NODE_ID: id }));
		await Promise.all(nodes.map(n => n.waitForOutput(/Jobs worker /, 60_000)));
		const sql = <T extends Record<string, unknown>>(text: string, params: unknown[] = []) => queryDb<T>(cluster.db.url, text, params);

		const [user] = await sql<{ id: string }>("INSERT INTO users (email, password_hash) VALUES ('sched@example.test', 'x') RETURNING id");
		const [session] = await sql<{ id: string }>("INSERT INTO sessions (user_id) VALUES ($1) RETURNING id", [user.id]);
		await sql(
			"INSERT INTO refresh_tokens (session_id, token_hash, expires_at) VALUES ($1, 'expired', now() - interval '1 minute'), ($1, 'live', now() + interval '1 day')",
			[session.id]
		);
		await sql(
			`INSERT INTO conversations (user_id, title, deleted_at) VALUES ($1, 'old', now() - interval '8 days'), ($1, 'recent', now() - interval '6 days'), ($1, 'kept', NULL)`,
			[user.id]
		);
		await waitFor(async () => (await sql("SELECT 1 FROM refresh_tokens WHERE token_hash = 'expired'")).length === 0, {
			timeoutMs: 10_000,
			what: "expired token purged"
		});
		await waitFor(async () => (await sql("SELECT 1 FROM conversations WHERE title = 'old'")).length === 0, {
			timeoutMs: 10_000,
			what: "old conversation purged"
		});
		expect((await sql<{ token_hash: string }>("SELECT token_hash FROM refresh_tokens")).map(r => r.token_hash)).toEqual(["live"]);
		expect((await sql<{ title: string }>("SELECT title FROM conversations ORDER BY title")).map(r => r.title)).toEqual(["kept", "recent"]);

		// Let a few more ticks pass with all three nodes up.
		const [{ now: from }] = await sql<{ now: Date }>("SELECT now()");
		await waitFor(async () => (await sql("SELECT 1 FROM schedule_runs WHERE name = 'refresh-token-purge' AND tick > $1", [from])).length >= 6, {
			timeoutMs: 20_000,
			what: "six more ticks"
		});

		const runs = await sql<{ tick: Date; node_id: string; finished_at: Date | null; error: unknown }>(
			"SELECT tick, node_id, finished_at, error FROM schedule_runs WHERE name = 'refresh-token-purge' ORDER BY tick"
		);
		expect(runs.length).toBeGreaterThanOrEqual(6);
		expect(runs.filter(r => r.error !== null)).toEqual([]);
		// Ticks are whole seconds, the same on every node.
		expect(runs.every(r => r.tick.getMilliseconds() === 0)).toBe(true);
		// Every tick from the first to the last ran (a tick is missed only if all three nodes are late).
		const span = (runs[runs.length - 1].tick.getTime() - runs[0].tick.getTime()) / 1000 + 1;
		expect(runs.length).toBeGreaterThanOrEqual(span - 1);

		// Each tick ran on exactly one node: every claimed and finished tick was logged as run once, by one node.
		const logged = () => nodes.flatMap(n => [...n.output().matchAll(/Schedule refresh-token-purge ran for tick (\S+)/g)].map(m => m[1]));
		const finishedTicks = runs.filter(r => r.finished_at !== null).map(r => r.tick.toISOString());
		expect(finishedTicks.length).toBeGreaterThanOrEqual(6);
		await waitFor(() => finishedTicks.every(t => logged().includes(t)), { timeoutMs: 5000, what: "the runs' log lines" });
		const lines = logged();
		for (const tick of finishedTicks)
			expect(
				lines.filter(t => t === tick),
				`runs of tick ${tick}`
			).toHaveLength(1);
		const claimed = new Set((await sql<{ tick: Date }>("SELECT tick FROM schedule_runs WHERE name = 'refresh-token-purge'")).map(r => r.tick.toISOString()));
		expect(lines.filter(t => !claimed.has(t))).toEqual([]);
	});
});
