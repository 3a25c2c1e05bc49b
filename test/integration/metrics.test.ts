import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ChatmeshNode } from "../../lib/node";
import { startSimulator, type SimulatorHandle } from "../../services/llm/simulator/simulator";
import { createTestDatabase, TEST_REDIS_URL, uniqueNamespace, type TestDatabase } from "../helpers/infra";
import { startTestNode, simulatorProviders } from "../helpers/nodes";

// METRICS_PORT turns on Moleculer's Prometheus reporter; a scrape sees the node's requests.
let sim: SimulatorHandle;
let db: TestDatabase;
let node: ChatmeshNode & { baseUrl: string };
let port: number;

const freePort = () =>
	new Promise<number>(resolve => {
		const server = net.createServer().listen(0, "127.0.0.1", () => {
			const { port: p } = server.address() as net.AddressInfo;
			server.close(() => resolve(p));
		});
	});

beforeAll(async () => {
	sim = await startSimulator();
	db = await createTestDatabase("metrics");
	port = await freePort();
	node = await startTestNode({
		DATABASE_URL: db.url,
		REDIS_URL: TEST_REDIS_URL,
		NAMESPACE: uniqueNamespace("metrics"),
		LLM_PROVIDERS: simulatorProviders(sim, ["sim-small"]),
		METRICS_PORT: String(port)
	});
});
afterAll(async () => {
	await node?.stop();
	await sim?.close();
	await db?.drop();
});

describe("Prometheus metrics", () => {
	it("are served on METRICS_PORT and count the node's requests", async () => {
		for (let i = 0; i < 3; i++) expect((await fetch(`${node.baseUrl}/ready`)).status).toBe(200);
		const res = await fetch(`http://127.0.0.1:${port}/metrics`);
		expect(res.status).toBe(200);
		const text = await res.text();
		expect(text).toMatch(/moleculer_request_total\{[^}]*action="gateway\.ready"[^}]*\} [3-9]/);
		expect(text).toMatch(/moleculer_request_total\{[^}]*action="llm\.health"/);
	});
});
