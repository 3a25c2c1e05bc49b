/**
 * Durable jobs. `jobs` is the record of every job and the queue itself: workers claim the
 * highest-priority runnable row with FOR UPDATE SKIP LOCKED, and hold it by a lease they renew,
 * so a job whose worker died is claimed again once its lease runs out. `job_steps` keeps each
 * completed step's result, so a job claimed again skips them; `job_events` is the numbered
 * progress feed clients resume from (SSE Last-Event-ID); `schedule_runs` claims each cron tick
 * for exactly one node.
 */
import type { MigrationClient } from "../lib/db/migrate";

export async function up(db: MigrationClient): Promise<void> {
	await db.query(`
		CREATE TABLE jobs (
			id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
			kind text NOT NULL,
			owner_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
			input jsonb NOT NULL,
			state text NOT NULL DEFAULT 'queued'
				CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'dead')),
			priority integer NOT NULL DEFAULT 0,
			progress jsonb,
			result jsonb,
			document_name text,
			document_type text,
			document text,
			error jsonb,
			attempts integer NOT NULL DEFAULT 0,
			max_attempts integer NOT NULL CHECK (max_attempts >= 1),
			run_after timestamptz NOT NULL DEFAULT now(),
			lease_owner text,
			lease_until timestamptz,
			cancel_requested boolean NOT NULL DEFAULT false,
			event_seq integer NOT NULL DEFAULT 0,
			created_at timestamptz NOT NULL DEFAULT now(),
			updated_at timestamptz NOT NULL DEFAULT now(),
			started_at timestamptz,
			finished_at timestamptz
		)
	`);
	// The claim: queued rows by priority, then age; running rows by lease expiry.
	await db.query("CREATE INDEX jobs_queued_idx ON jobs (priority DESC, created_at, id) WHERE state = 'queued'");
	await db.query("CREATE INDEX jobs_running_lease_idx ON jobs (lease_until) WHERE state = 'running'");
	// A user's own jobs, newest first (GET /api/jobs), and the per-user active count.
	await db.query("CREATE INDEX jobs_owner_created_idx ON jobs (owner_id, created_at DESC, id DESC)");
	await db.query("CREATE INDEX jobs_state_created_idx ON jobs (state, created_at DESC, id DESC)");
	await db.query(`
		CREATE TABLE job_steps (
			job_id uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
			name text NOT NULL,
			result jsonb,
			attempt integer NOT NULL,
			completed_at timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (job_id, name)
		)
	`);
	await db.query(`
		CREATE TABLE job_events (
			job_id uuid NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
			seq integer NOT NULL,
			type text NOT NULL,
			data jsonb NOT NULL,
			created_at timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (job_id, seq)
		)
	`);
	await db.query(`
		CREATE TABLE schedule_runs (
			name text NOT NULL,
			tick timestamptz NOT NULL,
			node_id text NOT NULL,
			started_at timestamptz NOT NULL DEFAULT now(),
			finished_at timestamptz,
			result jsonb,
			error jsonb,
			PRIMARY KEY (name, tick)
		)
	`);
}

export async function down(db: MigrationClient): Promise<void> {
	await db.query("DROP TABLE schedule_runs");
	await db.query("DROP TABLE job_events");
	await db.query("DROP TABLE job_steps");
	await db.query("DROP TABLE jobs");
}
