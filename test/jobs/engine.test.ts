/**
 * The jobs engine in a cluster: a front node (gateway, user, quota, llm against the test's
 * simulator) and jobs worker processes on the shared NATS JetStream, PostgreSQL and Redis. A
 * worker killed mid-job, 200 jobs on two workers with a late high-priority one, and a job that
 * always fails until it is dead and an admin retries it.
 */
import { afterAll, describe, expect, it } from "vitest";
import { withProcesses } from "../helpers/fixtures";
import { apiClient, signUp, type ApiClient, type Session } from "../helpers/http";
import { clusterEnv, queryDb, uniqueNamespace } from "../helpers/infra";
import { simulatorProviders } from "../helpers/nodes";
import { spawnProcess, type NodeProcess } from "../helpers/processes";
import { readSse } from "../helpers/chat";
import { deleteJobStreams, jobsStream, withJetStream } from "./engine-jetstream";
import { waitFor } from "../helpers/wait";
import { relaxedRateLimits } from "../helpers/fixtures";

const cluster = withProcesses({ label: "jobs-engine", database: true, simulator: {} });
const namespace = uniqueNamespace("jobs-engine");
let api: ApiClient;
let baseUrl = "";
const workers = new Map<string, NodeProcess>();

const STREAM = jobsStream(namespace);
afterAll(() => deleteJobStreams(namespace));

const sql = <T extends Record<string, unknown> = Record<string, unknown>>(text: string, params: unknown[] = []) =>
	queryDb<T>(cluster.db.url, text, params) as Promise<T[]>;

function env(extra: Record<string, string>): Record<string, string> {
	return {
		...clusterEnv(namespace, cluster.db.url),
		RATE_LIMITS: relaxedRateLimits(),
		LLM_PROVIDERS: simulatorProviders(cluster.sim),
		LOG_LEVEL: "info",
		JOBS_CONCURRENCY: "2",
		JOBS_LEASE_MS: "3000",
		JOBS_POLL_MS: "500",
		JOBS_MAX_ACTIVE_PER_USER: "1000",
		...extra
	};
}

/** A jobs worker process that knows the test kinds. */
function startWorker(nodeId: string): NodeProcess {
	const proc = spawnProcess({
		command: [process.execPath, "--import", "tsx", "test/jobs/job-node.ts"],
		env: env({ SERVICES: "jobs", NODE_ID: nodeId })
	});
	cluster.procs.push(proc);
	workers.set(nodeId, proc);
	return proc;
}

async function finished(s: Session, jobId: string, timeoutMs: number) {
	return waitFor(
		async () => {
			const res = await api.get<{ state: string; attempts: number; result: Record<string, unknown>; progress: { current: number } }>(`/api/jobs/${jobId}`, {
				token: s.accessToken
			});
			return ["succeeded", "failed", "cancelled", "dead"].includes(res.body.state) ? res.body : undefined;
		},
		{ timeoutMs, intervalMs: 200, what: `job ${jobId} finished` }
	);
}

describe("jobs engine on NATS JetStream", () => {
	it("starts a front node and two workers", { timeout: 60_000 }, async () => {
		const front = cluster.spawn(env({ SERVICES: "gateway,user,quota,llm,moderation", NODE_ID: "front" }));
		const w1 = startWorker("w1");
		const w2 = startWorker("w2");
		const port = await front.httpPort(50_000);
		await Promise.all([w1, w2].map(w => w.waitForOutput(/Jobs worker w\d:/, 50_000)));
		// Both workers know the front node's services (llm) before a job calls them.
		await Promise.all([w1, w2].map(w => w.waitForOutput(/Node 'front' connected/, 30_000)));
		baseUrl = `http://127.0.0.1:${port}`;
		api = apiClient(baseUrl);
		const user = await signUp(api, "jobs-warmup");
		// The gateway has discovered the jobs service once a submission is answered.
		await waitFor(async () => (await api.post("/api/jobs", { token: user.accessToken, body: { kind: "test-quick", input: { n: 0 } } })).status === 202, {
			timeoutMs: 20_000,
			what: "jobs reachable through the gateway"
		});
		// Wake-ups travel through a JetStream stream to one durable consumer group, acknowledged once handled.
		const consumer = await waitFor(
			() =>
				withJetStream(async jsm => {
					const info = await jsm.consumers.info(STREAM, "jobs");
					return info.delivered.consumer_seq > 0 && info.num_ack_pending === 0 ? info : undefined;
				}),
			{ timeoutMs: 10_000, what: "a wake-up delivered and acknowledged" }
		);
		expect(consumer.config.ack_policy).toBe("explicit");
		expect(consumer.config.deliver_group).toBe(STREAM);
	});

	it("finishes a multi-step job on another worker when its worker is killed: no recorded step's model call made twice", { timeout: 60_000 }, async () => {
		const user = await signUp(api, "jobs-kill");
		const tag = `kill-${Date.now()}`;
		const steps = 6;
		const res = await api.post<{ jobId: string }>("/api/jobs", { token: user.accessToken, body: { kind: "test-steps", input: { tag, steps, delayMs: 600 } } });
		expect(res.status).toBe(202);
		const jobId = res.body.jobId;
		// Followed live through the gateway while the job moves from one worker to another.
		const sse = fetch(`${baseUrl}/api/jobs/${jobId}/events`, { headers: { authorization: `Bearer ${user.accessToken}` } }).then(r => readSse(r));
		await waitFor(async () => (await sql("SELECT 1 FROM job_steps WHERE job_id = $1", [jobId])).length >= 2, {
			timeoutMs: 20_000,
			what: "two steps recorded"
		}).catch(async err => {
			const [job] = await sql("SELECT state, attempts, error, lease_owner, run_after FROM jobs WHERE id = $1", [jobId]);
			const outputs = [...workers.entries()].map(([id, w]) => `--- ${id}\n${w.output().slice(-4000)}`).join("\n");
			throw new Error(`${String(err)}; job: ${JSON.stringify(job)}\n${outputs}`);
		});
		const [{ lease_owner }] = await sql<{ lease_owner: string }>("SELECT lease_owner FROM jobs WHERE id = $1", [jobId]);
		const victimId = lease_owner.split(":")[0];
		const victim = workers.get(victimId);
		expect(victim).toBeDefined();
		victim?.kill("SIGKILL");
		await victim?.exited;
		const recordedAtKill = (await sql<{ name: string }>("SELECT name FROM job_steps WHERE job_id = $1", [jobId])).map(r => r.name);
		expect(recordedAtKill.length).toBeGreaterThanOrEqual(2);
		expect(recordedAtKill.length).toBeLessThan(steps);

		const job = await finished(user, jobId, 40_000);
		expect(job).toMatchObject({ state: "succeeded", attempts: 2, result: { steps }, progress: { current: steps } });
		const [finisher] = await sql<{ attempt: number; n: number }>("SELECT max(attempt) AS attempt, count(*)::int AS n FROM job_steps WHERE job_id = $1", [
			jobId
		]);
		expect(finisher).toEqual({ attempt: 2, n: steps });
		const frames = await sse;
		expect(frames.at(-1)?.data).toBe("[DONE]");
		const events = frames.filter(fr => fr.id).map(fr => ({ seq: Number(fr.id), ...(JSON.parse(fr.data) as { type: string; state?: string }) }));
		expect(events.at(-1)).toMatchObject({ type: "job:done", state: "succeeded" });
		expect(events.map(e => e.seq)).toEqual(events.map((_, i) => i + 1));

		const prompts = cluster.sim
			.requests()
			.flatMap(r => (r.messages ?? []) as { content?: string }[])
			.map(m => m.content ?? "")
			.filter(c => c.startsWith(`${tag} step `));
		const calls = (i: number) => prompts.filter(p => p === `${tag} step ${i}`).length;
		for (const name of recordedAtKill) expect(calls(Number(name.replace("step-", ""))), `${name} was recorded before the kill`).toBe(1);
		for (let i = 1; i <= steps; i++) expect(calls(i)).toBeGreaterThanOrEqual(1);
		// At most the step under way at the kill was asked again.
		expect(prompts.length).toBeLessThanOrEqual(steps + 1);

		startWorker(`${victimId}b`);
		await workers.get(`${victimId}b`)?.waitForOutput(/Jobs worker /, 50_000);
	});

	it("runs 200 jobs submitted at once on two workers, each once, a late high-priority one before the queued low ones", { timeout: 90_000 }, async () => {
		const user = await signUp(api, "jobs-many");
		const low: string[] = [];
		const submitLow = async (n: number) => {
			const res = await api.post<{ jobId: string }>("/api/jobs", { token: user.accessToken, body: { kind: "test-quick", input: { n, delayMs: 100 } } });
			expect(res.status).toBe(202);
			low.push(res.body.jobId);
		};
		for (let start = 0; start < 199; start += 25) await Promise.all(Array.from({ length: Math.min(25, 199 - start) }, (_, i) => submitLow(start + i)));
		const high = await api.post<{ jobId: string }>("/api/jobs", {
			token: user.accessToken,
			body: { kind: "test-quick", input: { n: 1000, delayMs: 100 }, priority: 10 }
		});
		expect(high.status).toBe(202);

		await waitFor(
			async () => {
				const [row] = await sql<{ open: number }>(
					"SELECT count(*)::int AS open FROM jobs WHERE owner_id = $1 AND state NOT IN ('succeeded', 'failed', 'dead', 'cancelled')",
					[user.userId]
				);
				return row.open === 0;
			},
			{ timeoutMs: 80_000, intervalMs: 250, what: "all 200 jobs finished" }
		);
		const rows = await sql<{
			id: string;
			state: string;
			attempts: number;
			started_at: Date;
			created_at: Date;
			lease_owner: string | null;
			result: { n: number };
		}>("SELECT id, state, attempts, started_at, created_at, result FROM jobs WHERE owner_id = $1", [user.userId]);
		expect(rows).toHaveLength(200);
		expect(rows.filter(r => r.state !== "succeeded")).toEqual([]);
		// None ran twice: one attempt each, one recorded step each, from that attempt.
		expect(rows.filter(r => r.attempts !== 1)).toEqual([]);
		const [stepRows] = await sql<{ n: number; retried: number }>(
			"SELECT count(*)::int AS n, count(*) FILTER (WHERE attempt <> 1)::int AS retried FROM job_steps s JOIN jobs j ON j.id = s.job_id WHERE j.owner_id = $1",
			[user.userId]
		);
		expect(stepRows).toEqual({ n: 200, retried: 0 });

		const highRow = rows.find(r => r.id === high.body.jobId);
		if (!highRow) throw new Error("high-priority job missing");
		// Low jobs still waiting when the high one was submitted: it must start before (nearly) all of them.
		const waiting = rows.filter(r => r.id !== highRow.id && r.started_at.getTime() > highRow.created_at.getTime());
		expect(waiting.length, "low-priority jobs still queued when the high one came").toBeGreaterThanOrEqual(20);
		const overtook = waiting.filter(r => r.started_at.getTime() < highRow.started_at.getTime());
		// Only claims already under way when it was committed (two workers, two slots each) may start before it.
		expect(overtook.length).toBeLessThanOrEqual(4);
	});

	it("retries an always-failing job with growing waits up to its limit, then it is dead, visible to an admin, who retries it", {
		timeout: 60_000
	}, async () => {
		const admin = await signUp(api, "jobs-admin");
		await sql("UPDATE users SET roles = ARRAY['user','admin'] WHERE id = $1", [admin.userId]);
		const user = await signUp(api, "jobs-fail");
		const res = await api.post<{ jobId: string }>("/api/jobs", { token: user.accessToken, body: { kind: "test-fail", input: {} } });
		const jobId = res.body.jobId;
		const dead = await finished(user, jobId, 30_000);
		expect(dead).toMatchObject({ state: "dead", attempts: 4, error: { type: "UPSTREAM_TIMEOUT", retryable: true } });

		// Each attempt records when it began; each failed one was queued again with the wait the
		// policy (400 ms base, doubling, half fixed and half random) chose, told as a job:retry event.
		const starts = (await sql<{ name: string; result: number }>("SELECT name, result FROM job_steps WHERE job_id = $1 ORDER BY name", [jobId])).map(r =>
			Number(r.result)
		);
		expect(starts).toHaveLength(4);
		const retries = (
			await sql<{ data: { attempt: number; retryInMs: number; runAfter: string } }>(
				"SELECT data FROM job_events WHERE job_id = $1 AND type = 'job:retry' ORDER BY seq",
				[jobId]
			)
		).map(r => r.data);
		expect(retries.map(r => r.attempt)).toEqual([1, 2, 3]);
		for (const [i, { retryInMs }] of retries.entries()) {
			expect(retryInMs, `wait after attempt ${i + 1}`).toBeGreaterThanOrEqual((400 * 2 ** i) / 2);
			expect(retryInMs, `wait after attempt ${i + 1}`).toBeLessThanOrEqual(400 * 2 ** i);
		}
		// The waits grow: each range starts where the one before ends.
		expect(retries[1].retryInMs).toBeGreaterThanOrEqual(retries[0].retryInMs);
		expect(retries[2].retryInMs).toBeGreaterThan(retries[0].retryInMs);
		// No attempt ran before its wait was over.
		for (const [i, { runAfter }] of retries.entries()) expect(starts[i + 1], `attempt ${i + 2}`).toBeGreaterThanOrEqual(Date.parse(runAfter));

		const list = await api.get<{ items: { id: string; state: string }[]; depth: { kind: string; state: string; count: number }[] }>(
			"/api/admin/jobs?state=dead&kind=test-fail",
			{ token: admin.accessToken }
		);
		expect(list.status).toBe(200);
		expect(list.body.items.map(j => j.id)).toEqual([jobId]);
		expect(list.body.depth).toContainEqual({ kind: "test-fail", state: "dead", count: 1 });

		const retried = await api.post<{ state: string; attempts: number }>(`/api/admin/jobs/${jobId}/retry`, { token: admin.accessToken });
		expect(retried.status).toBe(200);
		expect(retried.body).toMatchObject({ state: "queued", attempts: 0 });
		const deadAgain = await finished(user, jobId, 30_000);
		expect(deadAgain).toMatchObject({ state: "dead", attempts: 4 });
		const discarded = await api.post<{ state: string; error: { type: string } }>(`/api/admin/jobs/${jobId}/discard`, { token: admin.accessToken });
		expect(discarded.body).toMatchObject({ state: "cancelled", error: { type: "DISCARDED" } });
	});
});
