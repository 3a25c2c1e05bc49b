import OpenAI from "openai";
import type { Socket } from "socket.io-client";
import { describe, expect, it } from "vitest";
import { countPromptTokens } from "../../lib/token-count";
import type { SimulatorHandle } from "../../simulator/simulator";
import { collectGeneration, openSocket } from "../helpers/chat";
import { signUp, type ApiClient, type Session } from "../helpers/http";
import { type TestDatabase, queryDb } from "../helpers/infra";
import { type TestNode, withChatNode } from "../helpers/fixtures";
import { waitUntil } from "../helpers/processes";

// Token quotas on one node with the real PostgreSQL and Redis; the model is the simulator.
const MAX_OUTPUT = 40;
let sim: SimulatorHandle;
let db: TestDatabase;
let node: TestNode;
let api: ApiClient;
const { sockets } = withChatNode({
	label: "quota",
	resetSimulator: true,
	env: { QUOTA_MAX_OUTPUT_TOKENS: String(MAX_OUTPUT), LLM_IDLE_TIMEOUT_MS: "1000" },
	started: f => {
		({ sim, db, node, api } = f);
	}
});

const sql = (text: string, params: unknown[] = []) => queryDb(db.url, text, params);

async function socketFor(user: Session): Promise<Socket> {
	const socket = await openSocket(node.baseUrl, user.accessToken);
	sockets.push(socket);
	return socket;
}

interface Usage {
	tokensUsed: number;
	tokensReserved: number;
	tokensLimit: number;
	resetAt: string;
}

const usageOf = async (user: Session) => (await api.get<Usage>("/api/usage", { token: user.accessToken })).body;

/** What the simulator recorded for the chat completion requests since `from`. */
const reported = (from: number) =>
	sim
		.requests()
		.slice(from)
		.filter(r => r.path === "/v1/chat/completions")
		.reduce((sum, r) => sum + r.promptTokens + r.completionTokens, 0);

describe("quota", () => {
	it("50 concurrent sends on a budget for 10: the rest get QUOTA_EXCEEDED and used never passes the limit", async () => {
		sim.configure({ outputTokens: 10, tokenIntervalMs: 30 });
		const user = await signUp(api, "burst");
		const content = "count me";
		const perSend = countPromptTokens([{ role: "user", content }]) + MAX_OUTPUT;
		const limit = perSend * 10;
		await usageOf(user); // creates the row with the defaults
		await sql("UPDATE user_quotas SET tokens_limit = $2 WHERE user_id = $1", [user.userId, limit]);
		const before = sim.requests().length;

		const socket = await socketFor(user);
		const acks = await Promise.all(Array.from({ length: 50 }, () => socket.timeout(10_000).emitWithAck("chat:send", { content })));
		const accepted = acks.filter(a => a.generationId);
		const refused = acks.filter(a => a.error);
		expect(accepted).toHaveLength(10);
		expect(refused).toHaveLength(40);
		for (const r of refused) {
			expect(r.error.code).toBe("QUOTA_EXCEEDED");
			expect(Date.parse(r.error.data.resetAt)).toBeGreaterThan(Date.now());
		}
		// The refused sends stored nothing and never reached the model.
		await Promise.all(accepted.map(a => collectGeneration(socket, a.generationId).ended));
		const stored = await sql("SELECT count(*)::int AS n FROM messages WHERE user_id = $1", [user.userId]);
		expect(stored[0].n).toBe(20);
		await waitUntil(async () => (await usageOf(user)).tokensReserved === 0, 5000);
		const usage = await usageOf(user);
		// The bound: zero. Each call reserves its prompt (counted as the provider counts) plus the
		// most it may write, and the model is held to that; so used never passes the limit.
		expect(usage.tokensUsed).toBeLessThanOrEqual(limit);
		expect(usage.tokensUsed).toBe(reported(before));
		expect(
			sim
				.requests()
				.slice(before)
				.filter(r => r.path === "/v1/chat/completions")
		).toHaveLength(10);
	}, 60_000);

	it("charges what the simulator reported: for a completed, a cancelled and a failed generation", async () => {
		const user = await signUp(api, "charge");
		const socket = await socketFor(user);

		// Completed.
		sim.configure({ outputTokens: 12 });
		let from = sim.requests().length;
		let before = (await usageOf(user)).tokensUsed;
		const done = await socket.timeout(5000).emitWithAck("chat:send", { content: "complete me" });
		await collectGeneration(socket, done.generationId).ended;
		await waitUntil(async () => (await usageOf(user)).tokensReserved === 0, 5000);
		expect((await usageOf(user)).tokensUsed - before).toBe(reported(from));
		expect(reported(from)).toBeGreaterThan(12);

		// Cancelled: the model writes 5 tokens and stalls; the cancel aborts it.
		sim.configure({ outputTokens: 30, hangAfterTokens: 5 });
		from = sim.requests().length;
		before = (await usageOf(user)).tokensUsed;
		const cancelled = await socket.timeout(5000).emitWithAck("chat:send", { content: "cancel me" });
		const gen = collectGeneration(socket, cancelled.generationId, { stopAfterChunks: 5 });
		await gen.enough;
		await socket.timeout(5000).emitWithAck("generation:cancel", { generationId: cancelled.generationId });
		expect((await gen.ended).payload.status).toBe("cancelled");
		await waitUntil(async () => (await usageOf(user)).tokensReserved === 0, 5000);
		await waitUntil(async () => sim.requests()[from]?.aborted === true, 5000);
		expect(sim.requests()[from].completionTokens).toBe(5);
		expect((await usageOf(user)).tokensUsed - before).toBe(reported(from));

		// Failed: the model writes 5 tokens and goes silent past the idle timeout.
		from = sim.requests().length;
		before = (await usageOf(user)).tokensUsed;
		const failed = await socket.timeout(5000).emitWithAck("chat:send", { content: "fail me" });
		const end = await collectGeneration(socket, failed.generationId).ended;
		expect(end.payload.status).toBe("failed");
		expect(end.payload.code).toBe("UPSTREAM_TIMEOUT");
		await waitUntil(async () => (await usageOf(user)).tokensReserved === 0, 5000);
		expect((await usageOf(user)).tokensUsed - before).toBe(reported(from));
	}, 30_000);

	it("refuses an exhausted user with 429 QUOTA_EXCEEDED on socket.io, SSE and /v1 alike, before any model call", async () => {
		const admin = await signUp(api, "admin");
		await sql("UPDATE users SET roles = ARRAY['user','admin'] WHERE id = $1", [admin.userId]);
		const adminToken = (await api.post<{ accessToken: string }>("/api/auth/login", { body: { email: admin.email, password: admin.password } })).body
			.accessToken;
		const user = await signUp(api, "broke");
		const set = await api.put<Usage>(`/api/admin/users/${user.userId}/quota`, { token: adminToken, body: { tokensLimit: 0 } });
		expect(set.status).toBe(200);
		expect(set.body.tokensLimit).toBe(0);
		// Not for everyone: a plain user cannot set limits.
		expect((await api.put(`/api/admin/users/${user.userId}/quota`, { token: user.accessToken, body: { tokensLimit: 1e9 } })).status).toBe(403);

		const before = sim.requests().length;
		const socket = await socketFor(user);
		const ack = await socket.timeout(5000).emitWithAck("chat:send", { content: "no budget" });
		expect(ack.error.code).toBe("QUOTA_EXCEEDED");

		const conv = await api.post<{ id: string }>("/api/conversations", { token: user.accessToken, body: {} });
		const sse = await fetch(`${node.baseUrl}/api/conversations/${conv.body.id}/messages`, {
			method: "POST",
			headers: { authorization: `Bearer ${user.accessToken}`, "content-type": "application/json", accept: "text/event-stream" },
			body: JSON.stringify({ content: "no budget" })
		});
		expect(sse.status).toBe(429);
		expect(await sse.json()).toMatchObject({ type: "QUOTA_EXCEEDED", data: { resetAt: expect.any(String) } });

		const client = new OpenAI({ baseURL: `${node.baseUrl}/v1`, apiKey: user.accessToken, maxRetries: 0 });
		await expect(client.chat.completions.create({ model: "sim-small", messages: [{ role: "user", content: "no budget" }] })).rejects.toMatchObject({
			status: 429,
			code: "QUOTA_EXCEEDED"
		});
		await expect(
			client.chat.completions.create({ model: "sim-small", messages: [{ role: "user", content: "no budget" }], stream: true })
		).rejects.toMatchObject({ status: 429 });

		expect(sim.requests().length).toBe(before);
		const stored = await sql("SELECT count(*)::int AS n FROM messages WHERE user_id = $1", [user.userId]);
		expect(stored[0].n).toBe(0);
	});

	it("starts a new period on the first request after the old one ended, even before the schedule runs", async () => {
		sim.configure({ outputTokens: 5 });
		const user = await signUp(api, "newperiod");
		await usageOf(user);
		await sql("UPDATE user_quotas SET tokens_limit = 1000, tokens_used = 1000, reset_at = now() - interval '1 second' WHERE user_id = $1", [user.userId]);
		const socket = await socketFor(user);
		const ack = await socket.timeout(5000).emitWithAck("chat:send", { content: "a new month" });
		expect(ack.generationId).toEqual(expect.any(String));
		await collectGeneration(socket, ack.generationId).ended;
		await waitUntil(async () => (await usageOf(user)).tokensReserved === 0, 5000);
		const usage = await usageOf(user);
		expect(usage.tokensUsed).toBeGreaterThan(0);
		expect(usage.tokensUsed).toBeLessThan(1000);
		expect(Date.parse(usage.resetAt)).toBeGreaterThan(Date.now());
	});

	it("answers GET /api/usage with the caller's budget", async () => {
		const user = await signUp(api, "usage");
		const usage = await usageOf(user);
		expect(usage).toMatchObject({ tokensUsed: 0, tokensReserved: 0, tokensLimit: 1_000_000 });
		expect(Date.parse(usage.resetAt)).toBeGreaterThan(Date.now());
	});
});
