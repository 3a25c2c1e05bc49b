/**
 * What a job kind is to the jobs engine: its input's shape, its retry policy and its workflow.
 * A workflow is a sequence of named steps; the engine records each step's result as it completes,
 * so a job redelivered to another worker skips every recorded step (its model call is never made
 * twice) and carries on from the first one not recorded.
 */
import type { Context } from "moleculer";
import type { z } from "zod";
import type { ChatmeshMeta } from "../../lib/auth";

export const JOB_STATES = ["queued", "running", "succeeded", "failed", "cancelled", "dead"] as const;
export type JobState = (typeof JOB_STATES)[number];

export interface JobProgress {
	current: number;
	total: number;
	/** The step under way, e.g. "section 3 of 5". */
	step: string;
}

export interface RetryPolicy {
	/** Deliveries before the job ends `dead` (the first one included). */
	maxAttempts: number;
	/** First backoff; each next one doubles, up to maxDelayMs; half of each wait is fixed, half random (jitter). */
	baseDelayMs: number;
	maxDelayMs: number;
}

/** A document a job produces, downloadable from GET /api/jobs/:id/result. */
export interface JobDocument {
	filename: string;
	contentType: string;
	content: string;
}

export interface JobResult {
	/** A short machine-readable summary shown in the job's record (counts, titles). */
	summary: Record<string, unknown>;
	/** The downloadable document, when the kind makes one. */
	document?: JobDocument;
}

export interface JobContext<I> {
	readonly jobId: string;
	/** The user the job belongs to; model calls are charged to them. */
	readonly ownerId: string;
	readonly input: I;
	/** Which delivery this is (1 on the first). */
	readonly attempt: number;
	/** Aborted when the job is cancelled: pass it to model calls so they stop at once. */
	readonly signal: AbortSignal;
	/** The Moleculer context to call other services with, carrying the owner as the caller. */
	readonly ctx: Context<unknown, ChatmeshMeta>;
	/**
	 * Runs a step once: when a result is recorded under `name` from an earlier delivery it is
	 * returned without running `run`; otherwise `run` runs and its (JSON) result is recorded
	 * before this resolves. Throws a cancellation error between steps once the job is cancelled.
	 */
	step<T>(name: string, run: () => Promise<T>): Promise<T>;
	/** Reports progress (persisted and pushed to the owner's clients). */
	progress(progress: JobProgress): Promise<void>;
}

export interface JobKind<I = unknown> {
	readonly name: string;
	/** Validates POST /api/jobs input; a mismatch is 422 VALIDATION_ERROR and creates nothing. */
	readonly input: z.ZodType<I>;
	readonly retry: RetryPolicy;
	run(job: JobContext<I>): Promise<JobResult>;
}
