/**
 * The jobs API on one node (PostgreSQL, Redis, the in-process channel): submit, status, progress
 * over socket.io and SSE with resume, the result download, pagination, cancel, the per-user limit,
 * admin views, and bad input answered with a clear 4xx that changes nothing.
 */
import { describe, expect, it } from "vitest";
import { registerJobKind } from "../../services/jobs/registry";
import { withChatNode } from "../helpers/fixtures";
import { openSocket, readSse } from "../helpers/chat";
import { signUp, type Session } from "../helpers/http";
import { waitFor } from "../helpers/wait";
import { TEST_JOB_KINDS } from "./engine-kinds";

for (const kind of TEST_JOB_KINDS) registerJobKind(kind);

const MAX_ACTIVE = 3;

const f = withChatNode({
	label: "jobs-api",
	env: { JOBS_POLL_MS: "200", JOBS_LEASE_MS: "3000", JOBS_MAX_ACTIVE_PER_USER: String(MAX_ACTIVE), LOG_LEVEL: "warn" }
});

interface JobBody {
	id: string;
	state: string;
	progress: { current: number; total: number; step: string } | null;
	attempts: number;
	result: Record<string, unknown> | null;
	error: { type: string } | null;
	document: { filename: string; contentType: string } | null;
}

async function submit(s: Session, body: unknown) {
	return f.api.post<{ jobId: string; type?: string }>("/api/jobs", { token: s.accessToken, body });
}

async function finished(s: Session, jobId: string, timeoutMs = 20_000): Promise<JobBody> {
	return waitFor(
		async () => {
			const res = await f.api.get<JobBody>(`/api/jobs/${jobId}`, { token: s.accessToken });
			return ["succeeded", "failed", "cancelled", "dead"].includes(res.body.state) ? res.body : undefined;
		},
		{ timeoutMs, intervalMs: 100, what: `job ${jobId} finished` }
	);
}

const counts = async () => {
	const [row] = await f.sql<{ jobs: number; steps: number; events: number }>(
		"SELECT (SELECT count(*)::int FROM jobs) AS jobs, (SELECT count(*)::int FROM job_steps) AS steps, (SELECT count(*)::int FROM job_events) AS events"
	);
	return row;
};

describe("jobs API", () => {
	it("runs a job: 202 with Location, live progress on the owner's socket, the state, the document", async () => {
		const user = await signUp(f.api, "jobs-owner");
		const other = await signUp(f.api, "jobs-other");
		const socket = await openSocket(f.node.baseUrl, user.accessToken);
		const otherSocket = await openSocket(f.node.baseUrl, other.accessToken);
		f.sockets.push(socket, otherSocket);
		const seen: { name: string; payload: { jobId: string; seq: number; progress?: { current: number } } }[] = [];
		socket.on("job:progress", payload => seen.push({ name: "job:progress", payload }));
		socket.on("job:done", payload => seen.push({ name: "job:done", payload }));
		const leaked: unknown[] = [];
		otherSocket.onAny((name: string, payload) => name.startsWith("job:") && leaked.push(payload));

		const res = await submit(user, { kind: "test-steps", input: { tag: "api-run", steps: 3, delayMs: 20 } });
		expect(res.status).toBe(202);
		expect(res.headers.get("location")).toBe(`/api/jobs/${res.body.jobId}`);
		const job = await finished(user, res.body.jobId);
		expect(job).toMatchObject({ state: "succeeded", attempts: 1, progress: { current: 3, total: 3 }, result: { steps: 3 }, error: null });
		expect(job.document).toEqual({ filename: "api-run answers.md", contentType: "text/markdown; charset=utf-8" });

		await waitFor(() => seen.some(e => e.name === "job:done"), { what: "job:done on the socket" });
		expect(seen.filter(e => e.name === "job:progress").map(e => e.payload.progress?.current)).toEqual([1, 2, 3]);
		expect(seen.every(e => e.payload.jobId === job.id)).toBe(true);
		expect(leaked).toEqual([]);

		const download = await fetch(`${f.node.baseUrl}/api/jobs/${job.id}/result`, { headers: { authorization: `Bearer ${user.accessToken}` } });
		expect(download.status).toBe(200);
		expect(download.headers.get("content-type")).toBe("text/markdown; charset=utf-8");
		expect(download.headers.get("content-disposition")).toBe(`attachment; filename="api-run answers.md"; filename*=UTF-8''api-run%20answers.md`);
		expect(await download.text()).toMatch(/^## Step 1\n/);
	});

	it("replays a job's events as SSE after Last-Event-ID and ends with job:done", async () => {
		const user = await signUp(f.api, "jobs-sse");
		const res = await submit(user, { kind: "test-steps", input: { tag: "api-sse", steps: 3, delayMs: 150 } });
		// Live from the start, while the job runs.
		const live = await fetch(`${f.node.baseUrl}/api/jobs/${res.body.jobId}/events`, { headers: { authorization: `Bearer ${user.accessToken}` } });
		expect(live.headers.get("content-type")).toMatch(/^text\/event-stream/);
		const liveFrames = await readSse(live);
		const liveEvents = liveFrames.filter(fr => fr.data !== "[DONE]").map(fr => ({ id: Number(fr.id), ...JSON.parse(fr.data) }));
		expect(liveEvents.map(e => e.type)).toEqual(["job:progress", "job:progress", "job:progress", "job:done"]);
		expect(liveEvents.map(e => e.id)).toEqual([1, 2, 3, 4]);
		expect(liveFrames.at(-1)?.data).toBe("[DONE]");

		// Resumed after the second event: only what came after, no duplicate.
		const resumed = await fetch(`${f.node.baseUrl}/api/jobs/${res.body.jobId}/events`, {
			headers: { authorization: `Bearer ${user.accessToken}`, "last-event-id": "2" }
		});
		const frames = await readSse(resumed);
		expect(frames.map(fr => fr.id).filter(Boolean)).toEqual(["3", "4"]);
		expect(JSON.parse(frames[1].data)).toMatchObject({ type: "job:done", state: "succeeded", jobId: res.body.jobId });

		const bad = await f.api.get(`/api/jobs/${res.body.jobId}/events`, { token: user.accessToken, headers: { "last-event-id": "x" } });
		expect(bad.status).toBe(400);
		expect(bad.body).toMatchObject({ type: "BAD_LAST_EVENT_ID" });
	});

	it("lists the caller's own jobs newest first, cursor-paginated", async () => {
		const user = await signUp(f.api, "jobs-list");
		const other = await signUp(f.api, "jobs-list-other");
		const ids: string[] = [];
		for (let n = 0; n < 3; n++) ids.push((await submit(user, { kind: "test-quick", input: { n } })).body.jobId);
		await submit(other, { kind: "test-quick", input: { n: 99 } });
		const first = await f.api.get<{ items: JobBody[]; nextCursor: string | null }>("/api/jobs?limit=2", { token: user.accessToken });
		expect(first.status).toBe(200);
		expect(first.body.items.map(j => j.id)).toEqual([ids[2], ids[1]]);
		const second = await f.api.get<{ items: JobBody[]; nextCursor: string | null }>(`/api/jobs?limit=2&cursor=${first.body.nextCursor}`, {
			token: user.accessToken
		});
		expect(second.body.items.map(j => j.id)).toEqual([ids[0]]);
		expect(second.body.nextCursor).toBeNull();
		const badCursor = await f.api.get("/api/jobs?cursor=nonsense", { token: user.accessToken });
		expect(badCursor.status).toBe(400);
		expect(badCursor.body).toMatchObject({ type: "INVALID_CURSOR" });
	});

	it("cancels a running job at once: its step's wait is aborted, later steps never run", async () => {
		const user = await signUp(f.api, "jobs-cancel");
		const res = await submit(user, { kind: "test-steps", input: { tag: "api-cancel", steps: 5, delayMs: 2000 } });
		await waitFor(async () => (await f.sql("SELECT 1 FROM job_steps WHERE job_id = $1", [res.body.jobId])).length === 1, {
			timeoutMs: 15_000,
			what: "first step recorded"
		});
		const cancel = await f.api.post<JobBody>(`/api/jobs/${res.body.jobId}/cancel`, { token: user.accessToken });
		expect(cancel.status).toBe(202);
		const job = await finished(user, res.body.jobId, 5000);
		expect(job.state).toBe("cancelled");
		// The second step was under way (2 s of waiting) and was cut short: never recorded.
		const steps = await f.sql("SELECT name FROM job_steps WHERE job_id = $1", [res.body.jobId]);
		expect(steps.map(s => s.name)).toEqual(["step-1"]);

		const queued = await submit(user, { kind: "test-quick", input: { n: 1, delayMs: 0 } });
		const again = await f.api.post(`/api/jobs/${res.body.jobId}/cancel`, { token: user.accessToken });
		expect(again.status).toBe(409);
		expect(again.body).toMatchObject({ type: "JOB_FINISHED", data: { state: "cancelled" } });
		await finished(user, queued.body.jobId);
	});

	it("refuses more than JOBS_MAX_ACTIVE_PER_USER queued or running jobs with 429 TOO_MANY_JOBS", async () => {
		const user = await signUp(f.api, "jobs-limit");
		const ids: string[] = [];
		for (let n = 0; n < MAX_ACTIVE; n++) {
			const res = await submit(user, { kind: "test-quick", input: { n, delayMs: 1500 } });
			expect(res.status).toBe(202);
			ids.push(res.body.jobId);
		}
		const before = await counts();
		const refused = await submit(user, { kind: "test-quick", input: { n: 9 } });
		expect(refused.status).toBe(429);
		expect(refused.body).toMatchObject({ type: "TOO_MANY_JOBS", data: { limit: MAX_ACTIVE } });
		expect((await counts()).jobs).toBe(before.jobs);
		for (const id of ids) expect((await finished(user, id)).state).toBe("succeeded");
		expect((await submit(user, { kind: "test-quick", input: { n: 10 } })).status).toBe(202);
	});

	it("answers bad input with a clear 4xx and a stable code, and changes nothing", async () => {
		const user = await signUp(f.api, "jobs-bad");
		const other = await signUp(f.api, "jobs-bad-other");
		const done = await submit(user, { kind: "test-quick", input: { n: 1 } });
		await finished(user, done.body.jobId);
		const before = await counts();
		const [row] = await f.sql<{ updated_at: Date }>("SELECT updated_at FROM jobs WHERE id = $1", [done.body.jobId]);

		const unknown = await submit(user, { kind: "no-such-kind", input: {} });
		expect(unknown.status).toBe(422);
		expect(unknown.body).toMatchObject({ type: "UNKNOWN_JOB_KIND", data: { kind: "no-such-kind" } });
		const shape = await submit(user, { kind: "test-steps", input: { tag: "x", steps: "three" } });
		expect(shape.status).toBe(422);
		expect(shape.body).toMatchObject({ type: "VALIDATION_ERROR" });
		const noKind = await submit(user, { input: {} });
		expect(noKind.status).toBe(422);
		const badPriority = await submit(user, { kind: "test-quick", input: { n: 1 }, priority: 1000 });
		expect(badPriority.status).toBe(422);

		for (const path of ["", "/result", "/events"]) {
			const res = await f.api.get(`/api/jobs/${done.body.jobId}${path}`, { token: other.accessToken });
			expect(res.status, path).toBe(404);
			expect(res.body).toMatchObject({ type: "NOT_FOUND" });
		}
		const foreignCancel = await f.api.post(`/api/jobs/${done.body.jobId}/cancel`, { token: other.accessToken });
		expect(foreignCancel.status).toBe(404);
		const missing = await f.api.get("/api/jobs/00000000-0000-4000-8000-000000000000", { token: user.accessToken });
		expect(missing.status).toBe(404);
		const notUuid = await f.api.get("/api/jobs/not-a-uuid", { token: user.accessToken });
		expect(notUuid.status).toBeGreaterThanOrEqual(400);
		expect(notUuid.status).toBeLessThan(500);
		const finishedCancel = await f.api.post(`/api/jobs/${done.body.jobId}/cancel`, { token: user.accessToken });
		expect(finishedCancel.status).toBe(409);
		expect(finishedCancel.body).toMatchObject({ type: "JOB_FINISHED", data: { state: "succeeded" } });
		const anonymous = await f.api.post("/api/jobs", { body: { kind: "test-quick", input: { n: 1 } } });
		expect(anonymous.status).toBe(401);
		const notAdmin = await f.api.get("/api/admin/jobs", { token: user.accessToken });
		expect(notAdmin.status).toBe(403);

		expect(await counts()).toEqual(before);
		const [after] = await f.sql<{ updated_at: Date; state: string }>("SELECT updated_at, state FROM jobs WHERE id = $1", [done.body.jobId]);
		expect(after).toEqual({ updated_at: row.updated_at, state: "succeeded" });
	});

	it("shows admins every user's jobs by state and kind, with the queue depth per kind", async () => {
		const admin = await signUp(f.api, "jobs-admin");
		await f.sql("UPDATE users SET roles = ARRAY['user','admin'] WHERE id = $1", [admin.userId]);
		const user = await signUp(f.api, "jobs-admin-user");
		const res = await submit(user, { kind: "test-quick", input: { n: 5 } });
		await finished(user, res.body.jobId);
		const list = await f.api.get<{ items: JobBody[]; depth: unknown[] }>("/api/admin/jobs?state=succeeded&kind=test-quick&limit=100", {
			token: admin.accessToken
		});
		expect(list.status).toBe(200);
		expect(list.body.items.map(j => j.id)).toContain(res.body.jobId);
		expect(list.body.items.every(j => j.state === "succeeded")).toBe(true);
		expect(Array.isArray(list.body.depth)).toBe(true);
		const retryLive = await f.api.post(`/api/admin/jobs/${res.body.jobId}/retry`, { token: admin.accessToken });
		expect(retryLive.status).toBe(409);
		expect(retryLive.body).toMatchObject({ type: "JOB_NOT_DEAD" });
	});
});
