import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startSimulator, type SimulatorHandle } from "../../simulator/simulator";
import { relaxedRateLimits } from "../helpers/fixtures";
import { apiClient, signUp, type ApiClient, type Session } from "../helpers/http";
import { clusterEnv, createTestDatabase, uniqueNamespace, type TestDatabase } from "../helpers/infra";
import { simulatorProviders } from "../helpers/nodes";
import { spawnNode, waitUntil, type NodeProcess } from "../helpers/processes";

// One front node and two llm processes over the real NATS; one llm process is killed. Until its
// heartbeats time out it is still in the registry, and calls routed to it wait and are then
// refused: readiness and new turns must not depend on it while the other llm node serves.
let sim: SimulatorHandle;
let db: TestDatabase;
let front: NodeProcess;
let api: ApiClient;
const llm: NodeProcess[] = [];

beforeAll(async () => {
	sim = await startSimulator();
	db = await createTestDatabase("node_loss");
	const env = {
		...clusterEnv(uniqueNamespace("nodeloss"), db.url),
		LLM_PROVIDERS: simulatorProviders(sim),
		RATE_LIMITS: relaxedRateLimits()
	};
	front = spawnNode({ ...env, SERVICES: "gateway,user,conversation,quota,moderation", NODE_ID: "front-1" });
	llm.push(spawnNode({ ...env, SERVICES: "llm", NODE_ID: "llm-1" }), spawnNode({ ...env, SERVICES: "llm", NODE_ID: "llm-2" }));
	api = apiClient(`http://127.0.0.1:${await front.httpPort()}`);
	await Promise.all(llm.map((_, i) => front.waitForOutput(new RegExp(`Node 'llm-${i + 1}' connected`), 30_000)));
	await waitUntil(async () => (await api.get("/ready")).status === 200, 30_000);
}, 90_000);

afterAll(async () => {
	for (const p of [front, ...llm]) p?.kill("SIGKILL");
	await Promise.all([front, ...llm].filter(Boolean).map(p => p.exited));
	await sim?.close();
	await db?.drop();
});

interface GenerationStatus {
	status: string;
	content: string;
}

/** Sends a message (202) and waits for its answer's final state. */
async function turn(user: Session, content: string): Promise<GenerationStatus> {
	const created = await api.post<{ id: string }>("/api/conversations", { token: user.accessToken, body: {} });
	const res = await api.post<{ generationId: string }>(`/api/conversations/${created.body.id}/messages`, { token: user.accessToken, body: { content } });
	expect(res.status).toBe(202);
	let last: GenerationStatus = { status: "streaming", content: "" };
	await waitUntil(async () => {
		last = (await api.get<GenerationStatus>(`/api/generations/${res.body.generationId}`, { token: user.accessToken })).body;
		return last.status !== "streaming";
	}, 30_000);
	return last;
}

describe("an llm node killed while another serves", () => {
	it("keeps the gateway ready and every new turn answered, none refused for the dead node", async () => {
		const user = await signUp(api, "nodeloss");
		expect((await turn(user, "Say hello before anything fails")).status).toBe("completed");

		llm[1].kill("SIGKILL");
		await llm[1].exited;
		// Turns sent while the dead node is still in the registry: half would be routed to it.
		const turns = Promise.all(Array.from({ length: 6 }, (_, i) => turn(user, `Question ${i} while a node is lost`)));
		// Readiness is sampled until the front node has dropped the dead one.
		const readiness: number[] = [];
		const dropped = front.waitForOutput(/Node 'llm-2' disconnected/, 20_000);
		let done = false;
		void dropped.finally(() => (done = true));
		while (!done) {
			readiness.push((await api.get("/ready")).status);
			await new Promise(r => setTimeout(r, 250));
		}
		await dropped;
		const results = await turns;
		console.log(
			`node loss: ${results.filter(r => r.status === "completed").length}/${results.length} turns completed; /ready sampled ${readiness.length}×, ${readiness.filter(s => s !== 200).length} not ready`
		);
		expect(results.map(r => r.status)).toEqual(results.map(() => "completed"));
		expect(readiness.filter(s => s !== 200)).toEqual([]);
	}, 60_000);
});
