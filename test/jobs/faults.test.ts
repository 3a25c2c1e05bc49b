/**
 * Jobs through outages: a private NATS (JetStream, its own port and store) stopped and started
 * again while workers run jobs, and an embedded node (no transporter, PGlite in a temporary
 * DATA_DIR) restarted with jobs queued and running.
 */
import { describe, expect, it } from "vitest";
import { startNats, type Dependency } from "../faults/deps";
import { relaxedRateLimits, withProcesses } from "../helpers/fixtures";
import { apiClient, signUp, type ApiClient, type Session } from "../helpers/http";
import { queryDb, TEST_JWT_SECRET, TEST_REDIS_URL, uniqueNamespace } from "../helpers/infra";
import { simulatorProviders } from "../helpers/nodes";
import { spawnProcess, type NodeProcess } from "../helpers/processes";
import { waitFor } from "../helpers/wait";

const cluster = withProcesses({ label: "jobs-faults", database: true, simulator: {}, dataDir: true });

interface JobBody {
	state: string;
	attempts: number;
	result: Record<string, unknown> | null;
}

function startJobNode(env: Record<string, string>): NodeProcess {
	const proc = spawnProcess({ command: [process.execPath, "--import", "tsx", "test/jobs/job-node.ts"], env });
	cluster.procs.push(proc);
	return proc;
}

async function allFinished(api: ApiClient, s: Session, ids: string[], timeoutMs: number): Promise<JobBody[]> {
	return waitFor(
		async () => {
			const jobs = await Promise.all(ids.map(async id => (await api.get<JobBody>(`/api/jobs/${id}`, { token: s.accessToken })).body));
			return jobs.every(j => ["succeeded", "failed", "cancelled", "dead"].includes(j.state)) ? jobs : undefined;
		},
		{ timeoutMs, intervalMs: 250, what: "jobs finished" }
	);
}

async function submitQuick(api: ApiClient, s: Session, n: number, delayMs: number): Promise<string> {
	const res = await api.post<{ jobId: string }>("/api/jobs", { token: s.accessToken, body: { kind: "test-quick", input: { n, delayMs } } });
	if (res.status !== 202) throw new Error(`submit: ${res.status} ${JSON.stringify(res.body)}`);
	return res.body.jobId;
}

describe("jobs through a NATS restart", () => {
	let nats: Dependency | undefined;

	it("keeps running jobs while NATS is down and takes new ones once it is back", { timeout: 80_000 }, async () => {
		nats = await startNats();
		try {
			const namespace = uniqueNamespace("jobs-nats");
			const env = {
				NAMESPACE: namespace,
				TRANSPORTER: nats.url,
				DATABASE_URL: cluster.db.url,
				REDIS_URL: TEST_REDIS_URL,
				JWT_SECRET: TEST_JWT_SECRET,
				RATE_LIMITS: relaxedRateLimits(),
				LLM_PROVIDERS: simulatorProviders(cluster.sim),
				JOBS_CONCURRENCY: "2",
				JOBS_POLL_MS: "300",
				JOBS_MAX_ACTIVE_PER_USER: "100",
				HEARTBEAT_INTERVAL_S: "1",
				HEARTBEAT_TIMEOUT_S: "20",
				// A request sent while NATS restarts is lost (core NATS keeps nothing): fail it fast and send again.
				REQUEST_TIMEOUT_MS: "5000"
			};
			const front = cluster.spawn({ ...env, SERVICES: "gateway,user,quota,llm,moderation", NODE_ID: "front" });
			const worker = startJobNode({ ...env, SERVICES: "jobs", NODE_ID: "worker" });
			const api = apiClient(`http://127.0.0.1:${await front.httpPort(50_000)}`);
			await worker.waitForOutput(/Jobs worker /, 50_000);
			const user = await signUp(api, "jobs-nats");
			await waitFor(async () => (await api.post("/api/jobs", { token: user.accessToken, body: { kind: "test-quick", input: { n: 999 } } })).status === 202, {
				timeoutMs: 20_000,
				what: "jobs reachable"
			});

			const before: string[] = [];
			for (let n = 0; n < 12; n++) before.push(await submitQuick(api, user, n, 400));
			await waitFor(async () => (await queryDb(cluster.db.url, "SELECT 1 FROM jobs WHERE id = ANY($1) AND state = 'succeeded'", [before])).length >= 1, {
				timeoutMs: 15_000,
				what: "a job done before the outage"
			});
			const doneNow = async () =>
				(await queryDb<{ done: number }>(cluster.db.url, "SELECT count(*)::int AS done FROM jobs WHERE id = ANY($1) AND state = 'succeeded'", [before]))[0]
					.done;
			await nats.stop();
			const doneAtStop = await doneNow();
			expect(doneAtStop).toBeLessThan(before.length - 3);
			// With NATS away the worker goes on with what the database holds.
			await waitFor(async () => (await doneNow()) >= doneAtStop + 3, { timeoutMs: 20_000, what: "jobs finishing during the outage" });
			expect(
				await fetch(`http://127.0.0.1:${nats.port}`).then(
					() => "answers",
					() => "down"
				)
			).toBe("down");
			await nats.start();

			const after: string[] = [];
			let lastRefusal = "";
			await waitFor(
				async () => {
					try {
						after.push(await submitQuick(api, user, 100, 50));
						return true;
					} catch (err) {
						lastRefusal = String(err);
						return false;
					}
				},
				{ timeoutMs: 45_000, intervalMs: 500, what: "a submission accepted after NATS returned" }
			).catch(err => {
				throw new Error(`${String(err)}; last refusal: ${lastRefusal}\nfront:\n${front.output().slice(-3000)}\nworker:\n${worker.output().slice(-5000)}`);
			});
			for (let n = 101; n < 105; n++) after.push(await submitQuick(api, user, n, 50));
			const jobs = await allFinished(api, user, [...before, ...after], 30_000);
			expect(jobs.map(j => j.state)).toEqual(jobs.map(() => "succeeded"));
			expect(jobs.filter(j => j.attempts !== 1)).toEqual([]);
		} finally {
			await nats.dispose();
		}
	});
});

describe("jobs on a restarted embedded node", () => {
	it("resumes queued and running jobs after a restart, skipping the recorded steps", { timeout: 80_000 }, async () => {
		const env = { DATA_DIR: cluster.dataDir, JOBS_CONCURRENCY: "1", JOBS_POLL_MS: "300", RATE_LIMITS: relaxedRateLimits(), SHUTDOWN_GRACE_MS: "3000" };
		const first = startJobNode(env);
		const api1 = apiClient(`http://127.0.0.1:${await first.httpPort(60_000)}`);
		const user = await signUp(api1, "jobs-embedded");
		const running = await api1.post<{ jobId: string }>("/api/jobs", {
			token: user.accessToken,
			body: { kind: "test-steps", input: { tag: "embedded", steps: 4, delayMs: 700 } }
		});
		expect(running.status).toBe(202);
		const queued: string[] = [];
		for (let n = 0; n < 3; n++) queued.push(await submitQuick(api1, user, n, 100));
		const doneBefore = await waitFor(
			async () => {
				const job = (await api1.get<{ progress: { current: number } | null }>(`/api/jobs/${running.body.jobId}`, { token: user.accessToken })).body;
				return (job.progress?.current ?? 0) >= 2 ? (job.progress?.current ?? 0) : undefined;
			},
			{ timeoutMs: 20_000, what: "two steps done" }
		);
		first.kill("SIGTERM");
		expect(await first.exited).toBe(0);

		const second = startJobNode(env);
		const api2 = apiClient(`http://127.0.0.1:${await second.httpPort(60_000)}`);
		const jobs = await allFinished(api2, user, [running.body.jobId, ...queued], 30_000);
		expect(jobs.map(j => j.state)).toEqual(["succeeded", "succeeded", "succeeded", "succeeded"]);
		expect(jobs[0].result).toEqual({ steps: 4 });
		// The restart was no failure of the job: its interrupted attempt does not count.
		expect(jobs[0].attempts).toBe(1);
		expect(second.output()).toMatch(/Resuming 1 job\(s\) that were running|Jobs worker/);
		const doc = await fetch(`${`http://127.0.0.1:${await second.httpPort()}`}/api/jobs/${running.body.jobId}/result`, {
			headers: { authorization: `Bearer ${user.accessToken}` }
		});
		expect(await doc.text()).toMatch(/## Step 4/);
		// The steps done before the restart were not run again: the restarted node's own simulator saw only the others.
		const simulatorUrl = (second.output().match(/built-in inference simulator at (http:\/\/[\d.:]+)\/v1/) ?? [])[1];
		expect(simulatorUrl).toBeDefined();
		const log = (await (await fetch(`${simulatorUrl}/_simulator/requests`)).json()) as { messages: { content?: string }[] | null }[];
		const prompts = log.flatMap(r => r.messages ?? []).map(m => m.content ?? "");
		const calls = (i: number) => prompts.filter(p => p === `embedded step ${i}`).length;
		for (let i = 1; i <= doneBefore; i++) expect(calls(i), `step ${i} was done before the restart`).toBe(0);
		// The step under way at the stop may have finished before it; every later one ran once, here.
		expect(calls(doneBefore + 1)).toBeLessThanOrEqual(1);
		for (let i = doneBefore + 2; i <= 4; i++) expect(calls(i), `step ${i}`).toBe(1);
		second.kill("SIGTERM");
		await second.exited;
	});
});
