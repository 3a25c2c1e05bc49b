import { describe, expect, it } from "vitest";
import { withProcesses } from "../helpers/fixtures";
import { TEST_NATS_URL, uniqueNamespace, queryDb } from "../helpers/infra";
import { spawnNode, waitUntil } from "../helpers/processes";

// The scheduled quota reset on three quota nodes started together: one run resets the users
// whose period is over; the other nodes find the work done (or the lock taken) and do nothing.
const cluster = withProcesses({ label: "quota_reset", database: true });
const { procs } = cluster;

const sql = (text: string, params: unknown[] = []) => queryDb(cluster.db.url, text, params);

describe("quota reset", () => {
	it("runs once across three nodes started together", async () => {
		const env = { NAMESPACE: uniqueNamespace("qreset"), TRANSPORTER: TEST_NATS_URL, DATABASE_URL: cluster.db.url, SERVICES: "quota", QUOTA_RESET_CHECK_S: "1" };
		// The schema first (one node), then the users whose month is over, then three nodes at once.
		const first = spawnNode({ ...env, NODE_ID: "q-0" });
		await first.waitForOutput(/ServiceBroker with \d+ service\(s\) started/);
		first.kill("SIGTERM");
		await first.exited;
		for (let i = 0; i < 5; i++) {
			const [u] = await sql("INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id", [`reset${i}@example.test`]);
			await sql("INSERT INTO user_quotas (user_id, tokens_used, tokens_limit, period, reset_at) VALUES ($1, 500, 1000, 'month', now() - interval '1 minute')", [
				u.id
			]);
		}
		for (const id of ["q-1", "q-2", "q-3"]) procs.push(spawnNode({ ...env, NODE_ID: id }));
		await Promise.all(procs.map(p => p.waitForOutput(/ServiceBroker with \d+ service\(s\) started/)));
		// Time passing is the point: several schedule ticks on every node, of which only one may reset.
		await new Promise(r => setTimeout(r, 3500));
		await waitUntil(async () => (await sql("SELECT count(*)::int AS n FROM user_quotas WHERE tokens_used > 0"))[0].n === 0, 5000);

		const runs = await sql("SELECT node_id, users_reset FROM quota_resets");
		expect(runs).toHaveLength(1);
		expect(runs[0].users_reset).toBe(5);
		expect(["q-1", "q-2", "q-3"]).toContain(runs[0].node_id);
		const rows = await sql("SELECT tokens_used, reset_at FROM user_quotas");
		expect(rows.every(r => Number(r.tokens_used) === 0 && r.reset_at.getTime() > Date.now())).toBe(true);
		const said = procs.map(p => (p.output().match(/Quota period over for 5 user\(s\)/g) ?? []).length);
		expect(said.reduce((a, b) => a + b, 0)).toBe(1);
	}, 60_000);
});
