import type { Socket } from "socket.io-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SimulatorHandle } from "../../simulator/simulator";
import { relaxedRateLimits, withProcesses } from "../helpers/fixtures";
import { waitFor } from "../helpers/wait";
import { collectGeneration, openSocket, readSse } from "../helpers/chat";
import { apiClient, signUp, type ApiClient, type Session } from "../helpers/http";
import { clusterEnv, uniqueNamespace, type TestDatabase, queryDb } from "../helpers/infra";
import { spawnNode, waitUntil, type NodeProcess } from "../helpers/processes";
import { simulatorProviders } from "../helpers/nodes";

// Two gateway processes and one llm process over the real NATS, Redis and PostgreSQL; the
// simulator runs in this test process and is reached over HTTP by the llm process.
const cluster = withProcesses({ label: "chat_cluster", database: true, simulator: {} });
const { procs } = cluster;
let db: TestDatabase;
let sim: SimulatorHandle;
let llm: NodeProcess;
let gw1: { api: ApiClient; url: string };
let gw2: { api: ApiClient; url: string };
const sockets: Socket[] = [];

beforeAll(async () => {
	({ db, sim } = cluster);
	const env = {
		...clusterEnv(uniqueNamespace("chatcluster"), db.url),
		LLM_PROVIDERS: simulatorProviders(cluster.sim),
		RATE_LIMITS: relaxedRateLimits()
	};
	const front = "gateway,user,conversation,quota,moderation";
	const a = spawnNode({ ...env, SERVICES: front, NODE_ID: "gw-1" });
	const b = spawnNode({ ...env, SERVICES: front, NODE_ID: "gw-2" });
	llm = spawnNode({ ...env, SERVICES: "llm", NODE_ID: "llm-1" });
	procs.push(a, b, llm);
	const [pa, pb] = await Promise.all([a.httpPort(), b.httpPort()]);
	gw1 = { url: `http://127.0.0.1:${pa}`, api: apiClient(`http://127.0.0.1:${pa}`) };
	gw2 = { url: `http://127.0.0.1:${pb}`, api: apiClient(`http://127.0.0.1:${pb}`) };
	// Both gateways see the llm node before the tests start.
	for (const gw of [gw1, gw2]) await waitUntil(async () => (await gw.api.get("/ready")).status === 200, 30_000);
}, 90_000);

afterAll(() => {
	for (const s of sockets) s.disconnect();
});

async function socketOn(gw: { url: string }, user: Session): Promise<Socket> {
	const socket = await openSocket(gw.url, user.accessToken);
	sockets.push(socket);
	return socket;
}

async function stored(generationId: string) {
	const rows = await queryDb<{ content: string; status: string; completion_tokens: number | null }>(
		db.url,
		"SELECT content, status, completion_tokens FROM messages WHERE generation_id = $1",
		[generationId]
	);
	return rows[0];
}

async function finalOf(generationId: string, timeoutMs = 20_000) {
	return waitFor(
		async () => {
			const row = await stored(generationId);
			return row !== undefined && row.status !== "streaming" ? row : undefined;
		},
		{ timeoutMs, what: `generation ${generationId} to be stored as final` }
	);
}

describe("chat across nodes", () => {
	it("a client that drops on gateway 1 resumes on gateway 2 with exactly the remaining chunks", async () => {
		sim.configure({ outputTokens: 40, tokenIntervalMs: 25 });
		const user = await signUp(gw1.api, "resume");
		const first = await socketOn(gw1, user);
		const ack = await first.timeout(5000).emitWithAck("chat:send", { content: "a long answer across gateways" });
		const before = collectGeneration(first, ack.generationId, { stopAfterChunks: 6 });
		await before.enough;
		first.disconnect();
		const lastSeq = before.chunks.at(-1)?.seq as number;

		const second = await socketOn(gw2, user);
		const after = collectGeneration(second, ack.generationId);
		const sub = await second.timeout(5000).emitWithAck("generation:subscribe", { generationId: ack.generationId, after: lastSeq });
		expect(sub).toMatchObject({ ok: true });
		const end = await after.ended;
		expect(end.name).toBe("generation:done");

		const seqs = [...before.chunks, ...after.chunks].map(c => c.seq);
		expect(seqs).toEqual(seqs.map((_, i) => i + 1)); // no gap, no duplicate
		expect(after.chunks[0].seq).toBe(lastSeq + 1);
		const final = await finalOf(ack.generationId);
		expect(final.status).toBe("completed");
		expect(final.content).toBe(before.text() + after.text());
	}, 30_000);

	it("a generation whose client left is still stored complete", async () => {
		sim.configure({ outputTokens: 30, tokenIntervalMs: 10 });
		const user = await signUp(gw2.api, "gone");
		const socket = await socketOn(gw2, user);
		const ack = await socket.timeout(5000).emitWithAck("chat:send", { content: "finish without me" });
		socket.disconnect();
		const final = await finalOf(ack.generationId);
		expect(final.status).toBe("completed");
		expect(final.completion_tokens).toBe(30);
	}, 30_000);

	it("a cancel sent to gateway 2 stops a generation started on gateway 1, upstream included", async () => {
		sim.configure({ outputTokens: 300, tokenIntervalMs: 20 });
		const user = await signUp(gw1.api, "cancel");
		const socket = await socketOn(gw1, user);
		const ack = await socket.timeout(5000).emitWithAck("chat:send", { content: "cancel me from elsewhere" });
		const gen = collectGeneration(socket, ack.generationId, { stopAfterChunks: 5 });
		await gen.enough;
		const res = await gw2.api.post(`/api/generations/${ack.generationId}/cancel`, { token: user.accessToken });
		expect(res.status).toBe(200);
		const end = await gen.ended;
		expect(end.payload.status).toBe("cancelled");
		const final = await finalOf(ack.generationId);
		expect(final.status).toBe("cancelled");
		expect(final.content).toBe(gen.text());
		expect(final.content.length).toBeGreaterThan(0);
		await waitUntil(async () => sim.requests().some(r => r.aborted && r.stream), 5000);
		const upstream = sim
			.requests()
			.filter(r => r.path === "/v1/chat/completions")
			.at(-1);
		expect(upstream?.aborted).toBe(true);
		expect(upstream?.completionTokens).toBeLessThan(300);
	}, 30_000);

	it("a /v1 stream whose client leaves aborts the model on the llm node, and the quota keeps nothing reserved", async () => {
		sim.configure({ outputTokens: 300, tokenIntervalMs: 20 });
		const user = await signUp(gw1.api, "v1leave");
		const abort = new AbortController();
		const res = await fetch(`${gw1.url}/v1/chat/completions`, {
			method: "POST",
			headers: { authorization: `Bearer ${user.accessToken}`, "content-type": "application/json" },
			body: JSON.stringify({ model: "sim-small", stream: true, messages: [{ role: "user", content: "a long stateless answer" }] }),
			signal: abort.signal
		});
		expect(await readSse(res, { maxFrames: 5, abort })).toHaveLength(5);
		await waitUntil(
			async () =>
				sim
					.requests()
					.filter(r => r.path === "/v1/chat/completions")
					.at(-1)?.aborted === true,
			10_000
		);
		await waitUntil(async () => (await gw2.api.get<{ tokensReserved: number }>("/api/usage", { token: user.accessToken })).body.tokensReserved === 0, 10_000);
		const usage = await gw2.api.get<{ tokensUsed: number }>("/api/usage", { token: user.accessToken });
		expect(usage.body.tokensUsed).toBeGreaterThan(0);
		expect(usage.body.tokensUsed).toBeLessThan(300);
	}, 30_000);

	it("the llm process killed mid-stream: the client gets generation:error, the message ends interrupted, the user's message stays", async () => {
		sim.configure({ outputTokens: 500, tokenIntervalMs: 20 });
		const user = await signUp(gw1.api, "killed");
		const socket = await socketOn(gw1, user);
		const ack = await socket.timeout(5000).emitWithAck("chat:send", { content: "the model node will die" });
		const gen = collectGeneration(socket, ack.generationId, { stopAfterChunks: 5 });
		await gen.enough;
		const killedAt = Date.now();
		llm.kill("SIGKILL");
		const end = await gen.ended;
		const waited = Date.now() - killedAt;
		expect(end.name).toBe("generation:error");
		expect(end.payload.status).toBe("interrupted");
		// A killed node is noticed when its heartbeats stop: HEARTBEAT_TIMEOUT_S (6 s) plus one check
		// interval; the bound leaves room for a loaded machine and fails if nothing notices at all.
		expect(waited).toBeLessThan(15_000);
		const final = await finalOf(ack.generationId);
		expect(final.status).toBe("interrupted");
		expect(final.content.startsWith(gen.text().slice(0, 10))).toBe(true);
		const history = await gw1.api.get<{ items: Array<{ role: string; content: string }> }>(`/api/conversations/${ack.conversationId}/messages`, {
			token: user.accessToken
		});
		expect(history.body.items.find(m => m.role === "user")?.content).toBe("the model node will die");
	}, 40_000);
});
