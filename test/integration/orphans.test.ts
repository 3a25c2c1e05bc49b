import type { Socket } from "socket.io-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startSimulator, type SimulatorHandle } from "../../simulator/simulator";
import { collectGeneration, openSocket } from "../helpers/chat";
import { relaxedRateLimits } from "../helpers/fixtures";
import { apiClient, signUp, type ApiClient } from "../helpers/http";
import { clusterEnv, createTestDatabase, queryDb, type TestDatabase, uniqueNamespace } from "../helpers/infra";
import { simulatorProviders } from "../helpers/nodes";
import { type NodeProcess, spawnNode, waitUntil } from "../helpers/processes";

// A front node (gateway, user, quota, moderation, llm) and two conversation processes over the real
// NATS, Redis and PostgreSQL. One conversation process is killed while its answers stream: the
// other finishes them once their lease runs out, with the text the clients saw, tells every
// watcher through the generation log, and releases their quota holds.
const LEASE_TTL_MS = 3000;
let sim: SimulatorHandle;
let db: TestDatabase;
let api: ApiClient;
let frontUrl: string;
let front: NodeProcess;
const conversation: NodeProcess[] = [];
const sockets: Socket[] = [];

beforeAll(async () => {
	sim = await startSimulator({ outputTokens: 400, tokenIntervalMs: 25 });
	db = await createTestDatabase("orphans");
	const env = {
		...clusterEnv(uniqueNamespace("orphans"), db.url),
		LLM_PROVIDERS: simulatorProviders(sim),
		TURN_LEASE_TTL_MS: String(LEASE_TTL_MS),
		RATE_LIMITS: relaxedRateLimits()
	};
	front = spawnNode({ ...env, SERVICES: "gateway,user,quota,moderation,llm", NODE_ID: "front" });
	conversation.push(spawnNode({ ...env, SERVICES: "conversation", NODE_ID: "conv-1" }), spawnNode({ ...env, SERVICES: "conversation", NODE_ID: "conv-2" }));
	frontUrl = `http://127.0.0.1:${await front.httpPort()}`;
	api = apiClient(frontUrl);
	await Promise.all(conversation.map((_, i) => front.waitForOutput(new RegExp(`Node 'conv-${i + 1}' connected`), 30_000)));
	await waitUntil(async () => (await api.get("/ready")).status === 200, 30_000);
}, 90_000);

afterAll(async () => {
	for (const s of sockets) s.disconnect();
	const all = [front, ...conversation].filter(Boolean);
	for (const p of all) p.kill("SIGKILL");
	await Promise.all(all.map(p => p.exited));
	await sim?.close();
	await db?.drop();
});

describe("a conversation node killed mid-answer", () => {
	it("has its answers finished by the live node (interrupted, with the text clients saw, a terminal event, no hold left), and new turns go to the live node", async () => {
		const user = await signUp(api, "orphans");
		const socket = await openSocket(frontUrl, user.accessToken);
		sockets.push(socket);
		// Turns alternate between the two conversation nodes.
		const sent = await Promise.all(
			Array.from({ length: 6 }, async (_, i) => {
				const ack = await socket.timeout(5000).emitWithAck("chat:send", { content: `a long answer ${i}` });
				return { ack, watch: collectGeneration(socket, ack.generationId, { stopAfterChunks: 5 }) };
			})
		);
		await Promise.all(sent.map(s => s.watch.enough));
		const owners = await queryDb<{ generation_id: string; owner: string }>(
			db.url,
			"SELECT generation_id, metadata->>'ownerNode' AS owner FROM messages WHERE role = 'assistant' AND user_id = $1",
			[user.userId]
		);
		const orphaned = new Set(owners.filter(o => o.owner === "conv-1").map(o => o.generation_id));
		expect(orphaned.size).toBeGreaterThan(0);

		conversation[0].kill("SIGKILL");
		await conversation[0].exited;
		const killedAt = Date.now();
		// New turns while the dead node is still in the registry: half are routed to it, and go to the live one.
		sim.configure({ outputTokens: 20, tokenIntervalMs: 5 });
		const late = await Promise.all(
			Array.from({ length: 6 }, async (_, i) => {
				const created = await api.post<{ id: string }>("/api/conversations", { token: user.accessToken, body: {} });
				return api.post<{ generationId: string }>(`/api/conversations/${created.body.id}/messages`, {
					token: user.accessToken,
					body: { content: `after the kill ${i}` }
				});
			})
		);
		const ends = await Promise.all(sent.map(s => s.watch.ended));
		const secondsToEnd = (Date.now() - killedAt) / 1000;

		const rows = await queryDb<{ generation_id: string; status: string; content: string }>(
			db.url,
			"SELECT generation_id, status, content FROM messages WHERE role = 'assistant' AND user_id = $1",
			[user.userId]
		);
		console.log(
			`orphans: ${orphaned.size} of ${sent.length} answers lost their node; all ended within ${secondsToEnd.toFixed(1)} s of the kill; ${rows.filter(r => orphaned.has(r.generation_id) && r.status === "streaming").length} orphans left streaming`
		);
		for (const [i, { ack, watch }] of sent.entries()) {
			const row = rows.find(r => r.generation_id === ack.generationId);
			if (!orphaned.has(ack.generationId)) {
				expect(row?.status).toBe("completed");
				continue;
			}
			expect(ends[i].name).toBe("generation:error");
			expect(ends[i].payload).toMatchObject({ status: "interrupted", code: "INTERRUPTED" });
			expect(row?.status).toBe("interrupted");
			// The stored text is what the clients were sent, chunk for chunk.
			expect(row?.content).toBe(watch.text());
			expect(watch.text().length).toBeGreaterThan(0);
		}
		expect(late.map(r => r.status)).toEqual(late.map(() => 202));
		for (const { body } of late) {
			let status = "streaming";
			await waitUntil(async () => {
				status = (await api.get<{ status: string }>(`/api/generations/${body.generationId}`, { token: user.accessToken })).body.status;
				return status !== "streaming";
			}, 30_000);
			expect(status).toBe("completed");
		}
		// One turn per send: a send made again after its node was lost did not store a second one.
		const turns = await queryDb<{ n: string }>(db.url, "SELECT count(*) AS n FROM messages WHERE role = 'assistant' AND user_id = $1", [user.userId]);
		expect(Number(turns[0].n)).toBe(sent.length + late.length);
		const held = await queryDb<{ n: string }>(db.url, "SELECT count(*) AS n FROM quota_reservations WHERE user_id = $1", [user.userId]);
		console.log(`orphans: after the late turns, ${held[0].n} reservations held`);
		const streaming = await queryDb(db.url, "SELECT id FROM messages WHERE status = 'streaming' AND user_id = $1", [user.userId]);
		expect(streaming).toEqual([]);
		expect(Number(held[0].n)).toBe(0);
	}, 60_000);
});
