/**
 * The docker-compose topology run for real, as local processes behind Debian's nginx on the
 * repo's nginx.conf (see compose-topology.ts): sign-up, a socket.io turn over WebSocket, an SSE
 * turn streamed through unbuffered, long-polling socket.io sessions kept on their gateway while
 * both gateways take them, a job run by the jobs workers and its document downloaded, and a gateway
 * killed mid-answer with its clients resuming on the other through nginx with no gap and no duplicate.
 */
import { io, type Socket } from "socket.io-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { collectGeneration, eachSseData, type ChunkEvent } from "../helpers/chat";
import { apiClient, signUp, type ApiClient, type Session } from "../helpers/http";
import { waitFor } from "../helpers/wait";
import { removeTempDirs } from "./compose";
import { startTopology, type Topology } from "./compose-topology";

let topology: Topology;
let api: ApiClient;
let session: Session;

beforeAll(async () => {
	topology = await startTopology("compose");
	api = apiClient(topology.url);
	// Sign-up through nginx; each test below runs on this user.
	session = await signUp(api, "compose");
}, 180_000);

afterAll(async () => {
	await topology?.stop();
	removeTempDirs();
}, 30_000);

interface StreamEvent {
	type: string;
	seq?: number;
	delta?: string;
	status?: string;
}

/** Makes the simulator's answers this long and this slow (its runtime knobs). */
async function simulatorPace(outputTokens: number, tokenIntervalMs: number): Promise<void> {
	const res = await fetch(`${topology.simulatorUrl}/_simulator/config`, {
		method: "POST",
		headers: { "content-type": "application/json" },
		body: JSON.stringify({ outputTokens, tokenIntervalMs })
	});
	expect(res.status).toBe(200);
}

/** Hands each SSE event to onEvent as it arrives; resolves when the stream ends or breaks (a gateway killed). */
function eachSseEvent(res: Response, onEvent: (event: StreamEvent) => void): Promise<"ended" | "broken"> {
	return eachSseData(res, data => {
		if (data !== "[DONE]") onEvent(JSON.parse(data) as StreamEvent);
	}).then(
		() => "ended" as const,
		() => "broken" as const
	);
}

function openSocketThroughNginx(token: string, opts: { transports: ("websocket" | "polling")[]; cookie?: string }): Promise<Socket> {
	const socket = io(topology.url, {
		auth: { token },
		transports: opts.transports,
		reconnection: false,
		// The polling client keeps nginx's routing cookie, as a browser does.
		withCredentials: opts.cookie === undefined,
		extraHeaders: opts.cookie ? { cookie: opts.cookie } : undefined,
		timeout: 10_000
	});
	return new Promise((resolve, reject) => {
		socket.once("connect", () => resolve(socket));
		socket.once("connect_error", err => {
			socket.close();
			reject(err);
		});
	});
}

async function newConversation(token: string): Promise<string> {
	const res = await api.post<{ id: string }>("/api/conversations", { token, body: {} });
	expect(res.status).toBe(201);
	return res.body.id;
}

async function storedAnswer(token: string, generationId: string): Promise<{ status: string; content: string }> {
	return waitFor(
		async () => {
			const res = await api.get<{ status: string; content: string }>(`/api/generations/${generationId}`, { token });
			return res.status === 200 && res.body.status !== "streaming" ? res.body : undefined;
		},
		{ timeoutMs: 20_000, what: "the answer stored in its final state" }
	);
}

/** Sequence numbers 1..n, each once, in order. */
function expectNoGapNoDuplicate(seqs: number[]): void {
	expect(seqs.length).toBeGreaterThan(0);
	expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
}

/**
 * The gateway that answered each access log line for this URL fragment: nginx's $upstream_addr,
 * whose last address is the one that answered when it tried more than one ("a:1, b:2").
 */
function upstreamsOf(fragment: string): string[] {
	return topology
		.accessLog()
		.filter(line => line.includes(fragment))
		.map(line => /upstream=(.*?) route=/.exec(line)?.[1]?.split(", ").at(-1) ?? "");
}

function gatewayAddress(name: string): string {
	return `127.0.0.1:${topology.services.get(name)?.httpPort}`;
}

describe("the compose topology behind nginx", () => {
	it("serves sign-up and readiness through nginx, passing on a request id or making one", async () => {
		const ready = await api.get<{ status: string; checks: Record<string, { status: string }> }>("/ready");
		expect(ready.status).toBe(200);
		expect(ready.body.status).toBe("ready");

		const given = await api.get("/health", { headers: { "x-request-id": "compose-run-rid-1" } });
		expect(given.headers.get("x-request-id")).toBe("compose-run-rid-1");
		const made = await api.get("/health");
		expect(made.headers.get("x-request-id")).toMatch(/^[0-9a-f]{32}$/);
		// nginx's routing cookie: the client stays on the gateway it was given.
		expect(made.headers.get("set-cookie")).toMatch(/^chatmesh_gw=gateway_[12]; Path=\/; HttpOnly; SameSite=Lax$/);

		// nginx replaces X-Forwarded-For with the peer's address: a client claiming another address
		// still spends its own per-address budget (an appended header would give it a fresh one).
		const remaining = async (headers: Record<string, string>) =>
			Number((await api.post("/api/auth/login", { body: {}, headers })).headers.get("ratelimit-remaining"));
		const before = await remaining({});
		expect(before).toBeGreaterThan(1);
		expect(await remaining({ "x-forwarded-for": "203.0.113.9" })).toBe(before - 1);

		const me = await api.get<{ id: string }>("/api/me", { token: session.accessToken });
		expect(me.status).toBe(200);
		expect(me.body.id).toBe(session.userId);

		// Every service's compose healthcheck passes against its local process.
		expect([...topology.services.keys()]).toEqual(expect.arrayContaining(["core", "llm-1", "llm-2", "jobs-1", "jobs-2"]));
		for (const name of topology.services.keys()) expect(await topology.runHealthcheck(name), `${name} healthcheck`).toBe(0);
		// The nodes that keep data answer ready only with their database: the jobs workers too.
		for (const name of ["core", "jobs-1", "jobs-2"]) {
			const ready = await fetch(`http://127.0.0.1:${topology.services.get(name)?.env.HEALTH_PORT}/ready`);
			const body = (await ready.json()) as { checks: Record<string, { status: string; detail: string }> };
			expect(body.checks.database, name).toEqual(expect.objectContaining({ status: "ok", detail: "postgresql" }));
		}
	});

	it("runs a socket.io turn over WebSocket through nginx", async () => {
		await simulatorPace(24, 0);
		const socket = await openSocketThroughNginx(session.accessToken, { transports: ["websocket"] });
		try {
			expect(socket.io.engine.transport.name).toBe("websocket");
			const ack = await socket.timeout(15_000).emitWithAck("chat:send", { content: "hello through nginx over a websocket" });
			expect(ack.generationId).toEqual(expect.any(String));
			const generation = collectGeneration(socket, ack.generationId);
			const end = await Promise.race([generation.ended, timeout(20_000, "the WebSocket turn's end")]);
			expect(end.name).toBe("generation:done");
			expectNoGapNoDuplicate([...generation.chunks.map(c => c.seq), end.payload.seq]);
			expect((await storedAnswer(session.accessToken, ack.generationId)).content).toBe(generation.text());
		} finally {
			socket.close();
		}
	}, 45_000);

	it("streams an SSE answer through nginx unbuffered: the first chunk arrives while the answer is still being written", async () => {
		await simulatorPace(30, 100);
		const conversationId = await newConversation(session.accessToken);
		const res = await fetch(`${topology.url}/api/conversations/${conversationId}/messages`, {
			method: "POST",
			headers: { authorization: `Bearer ${session.accessToken}`, accept: "text/event-stream", "content-type": "application/json" },
			body: JSON.stringify({ content: "a slow answer through nginx, please" }),
			signal: AbortSignal.timeout(30_000)
		});
		expect(res.status).toBe(200);
		expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
		const generationId = res.headers.get("x-generation-id") as string;
		const events: StreamEvent[] = [];
		let statusAtFirstChunk: Promise<string> | undefined;
		await eachSseEvent(res, event => {
			events.push(event);
			if (event.type === "generation:chunk" && !statusAtFirstChunk)
				statusAtFirstChunk = api.get<{ status: string }>(`/api/generations/${generationId}`, { token: session.accessToken }).then(r => r.body.status);
		});
		// A buffering proxy would hand over the first chunk only with the rest, once the answer is stored.
		expect(await statusAtFirstChunk).toBe("streaming");
		expect(events.at(-1)?.type).toBe("generation:done");
		expectNoGapNoDuplicate(events.map(e => e.seq as number));
		const text = events.map(e => e.delta ?? "").join("");
		expect(await storedAnswer(session.accessToken, generationId)).toEqual(expect.objectContaining({ status: "completed", content: text }));
	}, 45_000);

	it("keeps each long-polling socket.io session on one gateway while both gateways take sessions, and every session completes a turn", async () => {
		await simulatorPace(24, 10);
		const sockets: Socket[] = [];
		try {
			// nginx gives each new client a gateway at random: open sessions until both gateways hold some.
			const gatewaysOf = () => new Set(upstreamsOf("transport=polling"));
			for (let i = 0; i < 16 && (sockets.length < 6 || gatewaysOf().size < 2); i++)
				sockets.push(await openSocketThroughNginx(session.accessToken, { transports: ["polling"] }));
			for (const socket of sockets) expect(socket.io.engine.transport.name).toBe("polling");

			const turns = await Promise.all(
				sockets.map(async (socket, i) => {
					const ack = await socket.timeout(15_000).emitWithAck("chat:send", { content: `long-polling turn ${i}` });
					const generation = collectGeneration(socket, ack.generationId);
					const end = await Promise.race([generation.ended, timeout(30_000, `polling turn ${i}`)]);
					return {
						sid: socket.io.engine.id,
						seqs: [...generation.chunks.map(c => c.seq), end.payload.seq],
						end,
						text: generation.text(),
						generationId: ack.generationId
					};
				})
			);
			for (const turn of turns) {
				expect(turn.end.name).toBe("generation:done");
				expectNoGapNoDuplicate(turn.seqs);
				expect((await storedAnswer(session.accessToken, turn.generationId)).content).toBe(turn.text);
			}

			// Every request of a session went to the gateway that holds it, and both gateways held sessions.
			const gatewayOfSession = new Map<string, Set<string>>();
			for (const turn of turns) {
				const upstreams = upstreamsOf(`sid=${turn.sid}`);
				expect(upstreams.length, `requests of session ${turn.sid}`).toBeGreaterThan(2);
				gatewayOfSession.set(turn.sid, new Set(upstreams));
			}
			for (const [sid, upstreams] of gatewayOfSession) expect(upstreams.size, `gateways of session ${sid}`).toBe(1);
			const used = new Set([...gatewayOfSession.values()].flatMap(s => [...s]));
			expect([...used].sort()).toEqual([gatewayAddress("gateway-1"), gatewayAddress("gateway-2")].sort());
		} finally {
			for (const socket of sockets) socket.close();
		}
	}, 90_000);

	it("runs an export job on the jobs workers, followed and downloaded through nginx", async () => {
		await simulatorPace(12, 0);
		const token = session.accessToken;
		const conversationId = await newConversation(token);
		const sent = await api.post<{ generationId: string }>(`/api/conversations/${conversationId}/messages`, {
			token,
			body: { content: "something worth exporting" }
		});
		expect(sent.status).toBe(202);
		const answer = await storedAnswer(token, sent.body.generationId);
		expect(answer.status).toBe("completed");

		const submitted = await api.post<{ jobId: string; state: string }>("/api/jobs", { token, body: { kind: "export", input: { conversationId } } });
		expect(submitted.status).toBe(202);
		const { jobId } = submitted.body;
		expect(submitted.headers.get("location")).toBe(`/api/jobs/${jobId}`);

		const job = await waitFor(
			async () => {
				const res = await api.get<{ state: string; progress: { current: number; total: number }; error: unknown }>(`/api/jobs/${jobId}`, { token });
				expect(res.status).toBe(200);
				if (["failed", "dead", "cancelled"].includes(res.body.state)) throw new Error(`job ended ${res.body.state}: ${JSON.stringify(res.body.error)}`);
				return res.body.state === "succeeded" ? res.body : undefined;
			},
			{ timeoutMs: 30_000, intervalMs: 250, what: "the export job to succeed" }
		);
		expect(job.progress.current).toBe(job.progress.total);

		const result = await fetch(`${topology.url}/api/jobs/${jobId}/result`, {
			headers: { authorization: `Bearer ${token}` },
			signal: AbortSignal.timeout(10_000)
		});
		expect(result.status).toBe(200);
		expect(result.headers.get("content-type")).toMatch(/^text\/markdown/);
		expect(result.headers.get("content-disposition")).toMatch(/^attachment; filename="chatmesh-export-[^"]+\.md"/);
		const document = await result.text();
		expect(document).toContain("something worth exporting");
		expect(document).toContain(answer.content.trim());
	}, 60_000);

	it("resumes through nginx on the other gateway when a gateway is killed mid-answer, with no gap and no duplicate", async () => {
		await simulatorPace(40, 100);
		const token = session.accessToken;
		const cookie = "chatmesh_gw=gateway_1";
		const conversationId = await newConversation(token);

		// An SSE client and a WebSocket client, both kept on gateway-1 by nginx's cookie.
		const socket = await openSocketThroughNginx(token, { transports: ["websocket"], cookie });
		const first = await fetch(`${topology.url}/api/conversations/${conversationId}/messages`, {
			method: "POST",
			headers: { authorization: `Bearer ${token}`, accept: "text/event-stream", "content-type": "application/json", cookie },
			body: JSON.stringify({ content: "a long answer that outlives its gateway" }),
			signal: AbortSignal.timeout(30_000)
		});
		expect(first.status).toBe(200);
		const generationId = first.headers.get("x-generation-id") as string;

		const sseSeqs: number[] = [];
		const sseDeltas: string[] = [];
		let sseDone = false;
		const onSse = (event: StreamEvent) => {
			if (event.seq === undefined) return;
			sseSeqs.push(event.seq);
			if (event.delta) sseDeltas.push(event.delta);
			if (event.type === "generation:done") sseDone = true;
		};
		const firstStream = eachSseEvent(first, onSse);

		const socketChunks: ChunkEvent[] = [];
		let socketEnd: { seq: number; status: string } | undefined;
		const listen = (s: Socket) => {
			s.on("generation:chunk", (c: ChunkEvent) => c.generationId === generationId && socketChunks.push(c));
			s.on("generation:done", (p: { generationId: string; seq: number; status: string }) => {
				if (p.generationId === generationId) socketEnd = p;
			});
		};
		listen(socket);
		const subscribed = await socket.timeout(10_000).emitWithAck("generation:subscribe", { generationId, after: 0 });
		expect(subscribed.ok).toBe(true);

		await waitFor(() => sseSeqs.length >= 3 && socketChunks.length >= 3, { timeoutMs: 15_000, what: "a few chunks on both clients" });
		topology.services.get("gateway-1")?.proc.kill("SIGKILL");
		await topology.services.get("gateway-1")?.proc.exited;
		await firstStream;
		expect(sseDone).toBe(false);
		// The answer's first part came through gateway-1 (nginx logs a request once it has ended it).
		const sent = await waitFor(() => upstreamsOf(`/api/conversations/${conversationId}/messages`).at(0), { timeoutMs: 5000, what: "the POST's log line" });
		expect(sent).toBe(gatewayAddress("gateway-1"));

		// SSE: the client comes back with Last-Event-ID; nginx sends gateway-1's clients to gateway-2.
		for (let attempt = 0; !sseDone && attempt < 5; attempt++) {
			const resumed = await fetch(`${topology.url}/api/generations/${generationId}/events`, {
				headers: { authorization: `Bearer ${token}`, accept: "text/event-stream", "last-event-id": String(sseSeqs.at(-1) ?? 0), cookie },
				signal: AbortSignal.timeout(30_000)
			});
			expect(resumed.status).toBe(200);
			await eachSseEvent(resumed, onSse);
		}
		expect(sseDone).toBe(true);
		expectNoGapNoDuplicate(sseSeqs);

		// socket.io: a new connection (same cookie) and generation:subscribe after the last seq seen.
		await waitFor(() => socket.disconnected, { timeoutMs: 10_000, what: "the WebSocket client to notice" });
		const again = await openSocketThroughNginx(token, { transports: ["websocket"], cookie });
		try {
			listen(again);
			const lastSeen = socketChunks.at(-1)?.seq ?? 0;
			expect((await again.timeout(10_000).emitWithAck("generation:subscribe", { generationId, after: lastSeen })).ok).toBe(true);
			await waitFor(() => socketEnd, { timeoutMs: 20_000, what: "the WebSocket client's generation:done" });
		} finally {
			again.close();
			socket.close();
		}
		expectNoGapNoDuplicate([...socketChunks.map(c => c.seq), socketEnd?.seq as number]);

		const stored = await storedAnswer(token, generationId);
		expect(stored.status).toBe("completed");
		expect(sseDeltas.join("")).toBe(stored.content);
		expect(socketChunks.map(c => c.delta).join("")).toBe(stored.content);
		// The resumed streams were served by gateway-2, through nginx.
		const resumedAt = upstreamsOf(`/api/generations/${generationId}/events`);
		expect(resumedAt.length).toBeGreaterThan(0);
		expect(new Set(resumedAt)).toEqual(new Set([gatewayAddress("gateway-2")]));
	}, 90_000);
});

function timeout(ms: number, what: string): Promise<never> {
	return new Promise((_, reject) => setTimeout(() => reject(new Error(`${what} did not come within ${ms} ms`)), ms).unref());
}
