import { ServiceBroker } from "moleculer";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../lib/config";
import { openDatabase, type Database } from "../../lib/db";
import { attachRuntime } from "../../lib/runtime";
import { brokerOptions } from "../../moleculer.config";
import { SERVICES } from "../../services";
import { createTestDatabase, queryDb, TEST_JWT_SECRET, uniqueNamespace, type TestDatabase } from "../helpers/infra";
import { waitUntil } from "../helpers/processes";

// Two local brokers in one process share the service schemas. Each quota service must run its
// reset schedule at its own node's QUOTA_RESET_CHECK_S, whatever the other broker was built with.
let db: TestDatabase;
const databases: Database[] = [];
const brokers: ServiceBroker[] = [];

const sql = (text: string, params: unknown[] = []) => queryDb(db.url, text, params);

/** A broker with only the quota service, created (not started) from its own configuration. */
async function quotaBroker(nodeID: string, resetCheckS: number): Promise<ServiceBroker> {
	const config = loadConfig({
		NODE_ENV: "test",
		LOG_LEVEL: "warn",
		NAMESPACE: uniqueNamespace("qsched"),
		NODE_ID: nodeID,
		DATABASE_URL: db.url,
		QUOTA_RESET_CHECK_S: String(resetCheckS)
	});
	const database = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir });
	databases.push(database);
	const broker = new ServiceBroker(brokerOptions(config));
	attachRuntime(broker, { config, database, providers: [], jwtSecret: TEST_JWT_SECRET });
	SERVICES.quota.create(broker);
	brokers.push(broker);
	return broker;
}

beforeAll(async () => {
	db = await createTestDatabase("quota_schedule");
});
afterAll(async () => {
	for (const broker of brokers) await broker.stop();
	for (const database of databases) await database.close();
	await db?.drop();
});

describe("quota reset schedule", () => {
	it("follows each broker's own configuration when two brokers share the process", async () => {
		// Both services exist before either starts: the second one's configuration must not leak
		// into the first one's schedule.
		const fast = await quotaBroker("q-fast", 1);
		const slow = await quotaBroker("q-slow", 3600);
		await fast.start();
		await slow.start();

		// A user whose period is over, after both start-up runs: only a scheduled run resets it.
		const [user] = await sql("INSERT INTO users (email, password_hash) VALUES ('sched@example.test', 'x') RETURNING id");
		await sql("INSERT INTO user_quotas (user_id, tokens_used, tokens_limit, period, reset_at) VALUES ($1, 500, 1000, 'month', now() - interval '1 minute')", [
			user.id
		]);

		// The 1-second schedule gets to it long before the 1-hour one could.
		await waitUntil(async () => Number((await sql("SELECT tokens_used FROM user_quotas WHERE user_id = $1", [user.id]))[0].tokens_used) === 0, 15_000);
		const runs = await sql("SELECT node_id, users_reset FROM quota_resets");
		expect(runs).toEqual([{ node_id: "q-fast", users_reset: 1 }]);
	}, 60_000);
});
