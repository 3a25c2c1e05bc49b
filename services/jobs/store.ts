/**
 * The jobs tables: the queue (claims by priority under FOR UPDATE SKIP LOCKED, leases), recorded
 * steps, the numbered event feed, and the schedule tick claims. Writes a worker makes for a job
 * it runs are guarded by its lease: a worker whose job was claimed again changes nothing.
 */
import type { Database, TransactionClient } from "../../lib/db";
import type { JobDocument, JobProgress, JobState } from "./kind";

export interface JobRow {
	id: string;
	kind: string;
	owner_id: string;
	input: unknown;
	state: JobState;
	priority: number;
	progress: JobProgress | null;
	result: Record<string, unknown> | null;
	document_name: string | null;
	document_type: string | null;
	error: Record<string, unknown> | null;
	attempts: number;
	max_attempts: number;
	run_after: Date;
	lease_owner: string | null;
	lease_until: Date | null;
	cancel_requested: boolean;
	created_at: Date;
	updated_at: Date;
	started_at: Date | null;
	finished_at: Date | null;
}

/** A job as clients and admins see it. */
export interface JobView {
	id: string;
	kind: string;
	ownerId: string;
	state: JobState;
	priority: number;
	progress: JobProgress | null;
	attempts: number;
	maxAttempts: number;
	cancelRequested: boolean;
	result: Record<string, unknown> | null;
	document: { filename: string; contentType: string } | null;
	error: Record<string, unknown> | null;
	runAfter: string;
	createdAt: string;
	startedAt: string | null;
	finishedAt: string | null;
}

export function jobView(row: JobRow): JobView {
	return {
		id: row.id,
		kind: row.kind,
		ownerId: row.owner_id,
		state: row.state,
		priority: row.priority,
		progress: row.progress,
		attempts: row.attempts,
		maxAttempts: row.max_attempts,
		cancelRequested: row.cancel_requested,
		result: row.result,
		document: row.document_name && row.document_type ? { filename: row.document_name, contentType: row.document_type } : null,
		error: row.error,
		runAfter: row.run_after.toISOString(),
		createdAt: row.created_at.toISOString(),
		startedAt: row.started_at?.toISOString() ?? null,
		finishedAt: row.finished_at?.toISOString() ?? null
	};
}

export interface JobEvent {
	jobId: string;
	ownerId: string;
	seq: number;
	/** `job:progress`, `job:retry` (a failed attempt queued again) or `job:done`. */
	type: string;
	data: Record<string, unknown>;
}

export const FINISHED_STATES: readonly JobState[] = ["succeeded", "failed", "cancelled", "dead"];

// Everything but input and the document body, which can be large.
const COLUMNS = `id, kind, owner_id, state, priority, progress, result, document_name, document_type, error, attempts, max_attempts,
	run_after, lease_owner, lease_until, cancel_requested, created_at, updated_at, started_at, finished_at`;

export class JobStore {
	constructor(private readonly db: Database) {}

	/** Inserts a queued job unless the owner already has `maxActive` queued or running; null then. */
	async insert(job: { kind: string; ownerId: string; input: unknown; priority: number; maxAttempts: number }, maxActive: number): Promise<JobRow | null> {
		return this.db.transaction(async tx => {
			// Serialises one owner's submissions, so the count cannot be passed by racing requests.
			await tx.query("SELECT pg_advisory_xact_lock(hashtext('chatmesh:jobs:' || $1))", [job.ownerId]);
			const [{ active }] = await tx.query<{ active: number }>(
				"SELECT count(*)::int AS active FROM jobs WHERE owner_id = $1 AND state IN ('queued', 'running')",
				[job.ownerId]
			);
			if (active >= maxActive) return null;
			const [row] = await tx.query<JobRow>(
				`INSERT INTO jobs (kind, owner_id, input, priority, max_attempts) VALUES ($1, $2, $3, $4, $5) RETURNING ${COLUMNS}`,
				[job.kind, job.ownerId, JSON.stringify(job.input), job.priority, job.maxAttempts]
			);
			return row;
		});
	}

	async get(id: string): Promise<JobRow | undefined> {
		const [row] = await this.db.query<JobRow>(`SELECT ${COLUMNS} FROM jobs WHERE id = $1`, [id]);
		return row;
	}

	async input(id: string): Promise<unknown> {
		const [row] = await this.db.query<{ input: unknown }>("SELECT input FROM jobs WHERE id = $1", [id]);
		return row?.input;
	}

	async document(id: string): Promise<JobDocument | undefined> {
		const [row] = await this.db.query<{ document_name: string | null; document_type: string | null; document: string | null }>(
			"SELECT document_name, document_type, document FROM jobs WHERE id = $1",
			[id]
		);
		if (!row?.document_name || !row.document_type || row.document === null) return undefined;
		return { filename: row.document_name, contentType: row.document_type, content: row.document };
	}

	/** Newest first, after a (created_at, id) position; filters by owner, state, kind when given. */
	async list(filter: { ownerId?: string; state?: JobState; kind?: string }, limit: number, after?: { at: string; id: string }): Promise<JobRow[]> {
		const where: string[] = [];
		const values: unknown[] = [];
		const add = (clause: (n: number) => string, value: unknown) => {
			values.push(value);
			where.push(clause(values.length));
		};
		if (filter.ownerId) add(n => `owner_id = $${n}`, filter.ownerId);
		if (filter.state) add(n => `state = $${n}`, filter.state);
		if (filter.kind) add(n => `kind = $${n}`, filter.kind);
		if (after) {
			values.push(after.at, after.id);
			where.push(`(created_at, id) < ($${values.length - 1}::timestamptz, $${values.length}::uuid)`);
		}
		values.push(limit);
		return this.db.query<JobRow>(
			`SELECT ${COLUMNS} FROM jobs ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY created_at DESC, id DESC LIMIT $${values.length}`,
			values
		);
	}

	/** Jobs per kind and state that are not finished, and the dead ones. */
	async depth(): Promise<{ kind: string; state: JobState; count: number }[]> {
		return this.db.query(
			"SELECT kind, state, count(*)::int AS count FROM jobs WHERE state IN ('queued', 'running', 'dead') GROUP BY kind, state ORDER BY kind, state"
		);
	}

	/**
	 * Claims the most urgent runnable job for `worker`: a queued one whose time has come, by
	 * priority then age, or a running one whose worker's lease ran out. Each claim is an attempt.
	 */
	async claim(worker: string, leaseMs: number): Promise<JobRow | undefined> {
		const [row] = await this.db.query<JobRow>(
			`UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = $1,
				lease_until = clock_timestamp() + $2 * interval '1 millisecond',
				started_at = coalesce(started_at, clock_timestamp()), updated_at = clock_timestamp()
			 WHERE id = (
				SELECT id FROM jobs
				 WHERE (state = 'queued' AND run_after <= now()) OR (state = 'running' AND lease_until < now())
				 ORDER BY priority DESC, created_at, id
				 LIMIT 1 FOR UPDATE SKIP LOCKED)
			 RETURNING ${COLUMNS}`,
			[worker, leaseMs]
		);
		return row;
	}

	/** Extends the lease; false when the job is no longer this worker's. Also says whether cancel was asked. */
	async renew(id: string, worker: string, leaseMs: number): Promise<{ held: boolean; cancelRequested: boolean }> {
		const [row] = await this.db.query<{ cancel_requested: boolean }>(
			`UPDATE jobs SET lease_until = clock_timestamp() + $3 * interval '1 millisecond'
			 WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING cancel_requested`,
			[id, worker, leaseMs]
		);
		return { held: row !== undefined, cancelRequested: row?.cancel_requested ?? false };
	}

	/**
	 * Gives leases up at once, for another claim: one worker's (`worker`), every worker's of a
	 * node (`node`), or all of them (neither: an embedded node restarting).
	 */
	async releaseLeases(owner: { worker?: string; node?: string }, refundAttempt: boolean): Promise<number> {
		const rows = await this.db.query(
			`UPDATE jobs SET lease_until = now() - interval '1 millisecond', attempts = CASE WHEN $3 THEN greatest(attempts - 1, 0) ELSE attempts END
			 WHERE state = 'running' AND ($1::text IS NULL OR lease_owner = $1) AND ($2::text IS NULL OR starts_with(lease_owner, $2 || ':'))
			 RETURNING id`,
			[owner.worker ?? null, owner.node ?? null, refundAttempt]
		);
		return rows.length;
	}

	async steps(id: string): Promise<Map<string, unknown>> {
		const rows = await this.db.query<{ name: string; result: unknown }>("SELECT name, result FROM job_steps WHERE job_id = $1", [id]);
		return new Map(rows.map(r => [r.name, r.result]));
	}

	/**
	 * Records a step's result while the lease holds. Returns the recorded result (an earlier one
	 * when the step was already recorded), or `lost` when the job is no longer this worker's.
	 */
	async recordStep(id: string, worker: string, name: string, result: unknown, attempt: number): Promise<{ recorded: unknown } | "lost"> {
		const [row] = await this.db.query<{ result: unknown }>(
			`INSERT INTO job_steps (job_id, name, result, attempt)
			 SELECT $1, $3, $4::jsonb, $5 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND lease_owner = $2 AND state = 'running')
			 ON CONFLICT (job_id, name) DO NOTHING RETURNING result`,
			[id, worker, name, JSON.stringify(result ?? null), attempt]
		);
		if (row) return { recorded: row.result };
		const [held] = await this.db.query("SELECT 1 FROM jobs WHERE id = $1 AND lease_owner = $2 AND state = 'running'", [id, worker]);
		if (!held) return "lost";
		const [existing] = await this.db.query<{ result: unknown }>("SELECT result FROM job_steps WHERE job_id = $1 AND name = $2", [id, name]);
		return { recorded: existing?.result ?? null };
	}

	/** Appends an event to the job's feed (and, for a worker, only while its lease holds); undefined when not written. */
	private async appendEvent(tx: TransactionClient, id: string, type: string, data: Record<string, unknown>): Promise<JobEvent | undefined> {
		const [row] = await tx.query<{ seq: number; owner_id: string }>(
			"UPDATE jobs SET event_seq = event_seq + 1 WHERE id = $1 RETURNING event_seq AS seq, owner_id",
			[id]
		);
		if (!row) return undefined;
		await tx.query("INSERT INTO job_events (job_id, seq, type, data) VALUES ($1, $2, $3, $4)", [id, row.seq, type, JSON.stringify(data)]);
		return { jobId: id, ownerId: row.owner_id, seq: row.seq, type, data };
	}

	async progress(id: string, worker: string, progress: JobProgress): Promise<JobEvent | undefined> {
		return this.db.transaction(async tx => {
			const held = await tx.query("UPDATE jobs SET progress = $3, updated_at = now() WHERE id = $1 AND lease_owner = $2 AND state = 'running' RETURNING id", [
				id,
				worker,
				JSON.stringify(progress)
			]);
			if (held.length === 0) return undefined;
			return this.appendEvent(tx, id, "job:progress", { jobId: id, progress });
		});
	}

	/**
	 * Moves a job to `state` with the given fields, only from one of `from` (and, for a worker,
	 * only while its lease holds), and appends its event. Undefined when the job was not there.
	 */
	async transition(
		id: string,
		change: {
			from: readonly JobState[];
			to: JobState;
			worker?: string;
			result?: Record<string, unknown> | null;
			document?: JobDocument | null;
			error?: Record<string, unknown> | null;
			runAfterMs?: number;
			resetAttempts?: boolean;
		}
	): Promise<{ row: JobRow; event?: JobEvent } | undefined> {
		return this.db.transaction(async tx => {
			const finished = FINISHED_STATES.includes(change.to);
			const [row] = await tx.query<JobRow>(
				`UPDATE jobs SET state = $2, updated_at = now(),
					result = CASE WHEN $4::boolean THEN $5::jsonb ELSE result END,
					document_name = CASE WHEN $6::boolean THEN $7 ELSE document_name END,
					document_type = CASE WHEN $6::boolean THEN $8 ELSE document_type END,
					document = CASE WHEN $6::boolean THEN $9 ELSE document END,
					error = CASE WHEN $10::boolean THEN $11::jsonb ELSE error END,
					run_after = CASE WHEN $12::int IS NULL THEN run_after ELSE now() + $12 * interval '1 millisecond' END,
					attempts = CASE WHEN $13 THEN 0 ELSE attempts END,
					cancel_requested = CASE WHEN $13 THEN false ELSE cancel_requested END,
					lease_owner = CASE WHEN $2 = 'running' THEN lease_owner ELSE NULL END,
					lease_until = CASE WHEN $2 = 'running' THEN lease_until ELSE NULL END,
					finished_at = CASE WHEN $14 THEN now() ELSE NULL END
				 WHERE id = $1 AND state = ANY($3::text[]) AND ($15::text IS NULL OR lease_owner = $15)
				 RETURNING ${COLUMNS}`,
				[
					id,
					change.to,
					change.from,
					change.result !== undefined,
					change.result === undefined ? null : JSON.stringify(change.result),
					change.document !== undefined,
					change.document?.filename ?? null,
					change.document?.contentType ?? null,
					change.document?.content ?? null,
					change.error !== undefined,
					change.error === undefined ? null : JSON.stringify(change.error),
					change.runAfterMs ?? null,
					change.resetAttempts ?? false,
					finished,
					change.worker ?? null
				]
			);
			if (!row) return undefined;
			// A failed attempt queued again: its owner hears when the next one is due (SSE, socket.io).
			if (change.to === "queued" && change.from.includes("running") && change.runAfterMs !== undefined) {
				const retry = { jobId: id, attempt: row.attempts, retryInMs: change.runAfterMs, runAfter: row.run_after.toISOString(), error: row.error };
				return { row, event: await this.appendEvent(tx, id, "job:retry", retry) };
			}
			if (!finished) return { row };
			const event = await this.appendEvent(tx, id, "job:done", { jobId: id, state: row.state, result: row.result, error: row.error });
			return { row, event };
		});
	}

	/** Asks a running job to stop; the row after, or undefined when it is not running. */
	async requestCancel(id: string): Promise<JobRow | undefined> {
		const [row] = await this.db.query<JobRow>(
			`UPDATE jobs SET cancel_requested = true, updated_at = now() WHERE id = $1 AND state = 'running' RETURNING ${COLUMNS}`,
			[id]
		);
		return row;
	}

	async eventsAfter(id: string, after: number, limit = 1000): Promise<JobEvent[]> {
		const rows = await this.db.query<{ seq: number; type: string; data: Record<string, unknown>; owner_id: string }>(
			`SELECT e.seq, e.type, e.data, j.owner_id FROM job_events e JOIN jobs j ON j.id = e.job_id WHERE e.job_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3`,
			[id, after, limit]
		);
		return rows.map(r => ({ jobId: id, ownerId: r.owner_id, seq: r.seq, type: r.type, data: r.data }));
	}

	/** Claims one tick of a schedule for this node; false when another node has it. */
	async claimTick(name: string, tick: Date, nodeID: string): Promise<boolean> {
		const rows = await this.db.query("INSERT INTO schedule_runs (name, tick, node_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING name", [
			name,
			tick,
			nodeID
		]);
		return rows.length === 1;
	}

	async finishTick(name: string, tick: Date, outcome: { result?: unknown; error?: unknown }): Promise<void> {
		await this.db.query("UPDATE schedule_runs SET finished_at = now(), result = $3, error = $4 WHERE name = $1 AND tick = $2", [
			name,
			tick,
			outcome.result === undefined ? null : JSON.stringify(outcome.result),
			outcome.error === undefined ? null : JSON.stringify(outcome.error)
		]);
	}

	/** Finished jobs and schedule runs past the retention period. */
	async purge(retentionDays: number): Promise<{ jobs: number; scheduleRuns: number }> {
		const jobs = await this.db.query(
			"DELETE FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at < now() - $1 * interval '1 day' RETURNING id",
			[retentionDays]
		);
		const runs = await this.db.query("DELETE FROM schedule_runs WHERE tick < now() - $1 * interval '1 day' RETURNING name", [retentionDays]);
		return { jobs: jobs.length, scheduleRuns: runs.length };
	}
}
