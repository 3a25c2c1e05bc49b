/**
 * A jobs node's worker: up to `concurrency` jobs at once, each claimed from the database (the
 * most urgent runnable one), run through its kind's workflow with a JobContext, its lease renewed
 * while it runs, and ended in a recorded state: succeeded, failed, cancelled, dead, or queued
 * again after a backoff.
 */
import { randomUUID } from "node:crypto";
import type { Context, Logger, ServiceBroker } from "moleculer";
import type { ChatmeshMeta } from "../../lib/auth";
import { ChatmeshClientError, ERR_CANCELLED, ERR_UNKNOWN_JOB_KIND, ERR_VALIDATION } from "../../lib/errors";
import type { JobContext, JobKind, JobProgress, JobResult } from "./kind";
import type { JobsMetrics } from "./metrics";
import { backoffMs, errorRecord, isRetryable } from "./retry";
import type { JobEvent, JobRow, JobStore } from "./store";

export class JobCancelledError extends ChatmeshClientError {
	constructor(jobId: string) {
		super("Job cancelled", ERR_CANCELLED, { jobId });
	}
}

/** Why a running job's signal was aborted. */
type StopReason = "cancelled" | "lease-lost" | "node-stopping";

export interface RunnerOptions {
	broker: ServiceBroker;
	logger: Logger;
	store: JobStore;
	kinds: ReadonlyMap<string, JobKind>;
	/** Names this worker in leases; unique per process start. */
	workerId: string;
	concurrency: number;
	leaseMs: number;
	/** Sends a job event to the owner's clients (every gateway). */
	publish(event: JobEvent): void;
	metrics: JobsMetrics;
}

interface Running {
	abort: AbortController;
	done: Promise<void>;
}

export class JobRunner {
	private readonly running = new Map<string, Running>();
	private slotsTaken = 0;
	private readonly slotWaiters: (() => void)[] = [];
	private stopping = false;
	private stopped?: Promise<void>;
	private readonly retryTimers = new Set<NodeJS.Timeout>();

	constructor(private readonly opts: RunnerOptions) {}

	get workerId(): string {
		return this.opts.workerId;
	}

	/** Ids of the jobs this worker runs now. */
	get active(): string[] {
		return [...this.running.keys()];
	}

	/**
	 * A wake-up from the channel: waits for a free slot, claims the most urgent runnable job (not
	 * necessarily the one the message was sent for: priorities live in the database) and resolves
	 * once that job is in a recorded state, so the message is acknowledged only then.
	 * `keepAlive` tells the channel the message is still being worked on.
	 */
	async handleWake(keepAlive: () => void = () => {}): Promise<void> {
		if (this.stopping) return;
		await this.acquireSlot();
		await this.claimAndRun(keepAlive);
	}

	/** Fills the free slots with runnable jobs (the timer's and the start's way to find work). */
	async poll(): Promise<void> {
		while (!this.stopping && this.slotsTaken < this.opts.concurrency) {
			this.slotsTaken += 1;
			const claimed = await this.claimAndRun(() => {}, true);
			if (!claimed) return;
		}
	}

	/** Aborts a job this worker runs (cancel, broadcast to every worker). */
	abort(jobId: string, reason: StopReason): boolean {
		const running = this.running.get(jobId);
		if (!running) return false;
		running.abort.abort(reason);
		return true;
	}

	/** Stops claiming, aborts running jobs and gives their leases up for another worker. */
	stop(): Promise<void> {
		this.stopped ??= this.drain();
		return this.stopped;
	}

	private async drain(): Promise<void> {
		this.stopping = true;
		for (const timer of this.retryTimers) clearTimeout(timer);
		for (const waiter of this.slotWaiters.splice(0)) waiter();
		const running = [...this.running.values()];
		for (const r of running) r.abort.abort("node-stopping");
		await Promise.allSettled(running.map(r => r.done));
		// This stop was not the job's fault: the attempt does not count.
		const released = await this.opts.store.releaseLeases({ worker: this.opts.workerId }, true);
		if (released) this.opts.logger.info(`Released ${released} running job(s) for another worker`);
	}

	private acquireSlot(): Promise<void> {
		if (this.slotsTaken < this.opts.concurrency) {
			this.slotsTaken += 1;
			return Promise.resolve();
		}
		return new Promise(resolve =>
			this.slotWaiters.push(() => {
				this.slotsTaken += 1;
				resolve();
			})
		);
	}

	private releaseSlot(): void {
		this.slotsTaken -= 1;
		const next = this.slotWaiters.shift();
		if (next) next();
		// A finished job frees a slot: there may be more work than wake-ups (retries coming due).
		else if (!this.stopping) setImmediate(() => void this.poll().catch(err => this.opts.logger.warn("Job poll failed", err)));
	}

	/** With a slot taken: claims a job and, when `background`, runs it without waiting. Releases the slot when done. */
	private async claimAndRun(keepAlive: () => void, background = false): Promise<boolean> {
		// Nothing to run (or no database): the slot goes to a waiting wake-up, if any, without a new poll.
		const giveBack = () => {
			this.slotsTaken -= 1;
			this.slotWaiters.shift()?.();
		};
		let row: JobRow | undefined;
		try {
			row = this.stopping ? undefined : await this.opts.store.claim(this.opts.workerId, this.opts.leaseMs);
		} catch (err) {
			giveBack();
			throw err;
		}
		if (!row) {
			giveBack();
			return false;
		}
		const abort = new AbortController();
		const claimed = row;
		const claimedAt = performance.now();
		const done = this.run(claimed, abort, keepAlive)
			.catch(err => this.opts.logger.error(`Job ${claimed.id} could not be recorded`, err))
			.finally(() => {
				this.opts.metrics.ran(claimed.kind, (performance.now() - claimedAt) / 1000);
				this.running.delete(claimed.id);
				this.releaseSlot();
			});
		this.running.set(claimed.id, { abort, done });
		if (!background) await done;
		return true;
	}

	private async run(row: JobRow, abort: AbortController, keepAlive: () => void): Promise<void> {
		const { store, workerId, logger } = this.opts;
		const kind = this.opts.kinds.get(row.kind);
		if (!kind) {
			await this.finish(row, {
				from: ["running"],
				to: "failed",
				worker: workerId,
				error: { type: ERR_UNKNOWN_JOB_KIND, message: `No job kind '${row.kind}' on this node` }
			});
			return;
		}
		if (row.cancel_requested) {
			await this.finish(row, { from: ["running"], to: "cancelled", worker: workerId });
			return;
		}
		// A worker died (or its lease ran out) on the last allowed attempt.
		if (row.attempts > row.max_attempts) {
			await this.finish(row, {
				from: ["running"],
				to: "dead",
				worker: workerId,
				error: row.error ?? { type: "ATTEMPTS_EXHAUSTED", message: `The job's worker was lost on its last attempt (${row.max_attempts})` }
			});
			return;
		}
		const parsed = kind.input.safeParse(await store.input(row.id));
		if (!parsed.success) {
			await this.finish(row, {
				from: ["running"],
				to: "failed",
				worker: workerId,
				error: { type: ERR_VALIDATION, message: "The job's input does not fit its kind" }
			});
			return;
		}

		const renew = setInterval(
			() => {
				keepAlive();
				store
					.renew(row.id, workerId, this.opts.leaseMs)
					.then(({ held, cancelRequested }) => {
						if (!held) abort.abort("lease-lost");
						else if (cancelRequested) abort.abort("cancelled");
					})
					.catch(err => logger.warn(`Lease renewal of job ${row.id} failed`, err));
			},
			Math.max(200, Math.floor(this.opts.leaseMs / 3))
		);
		try {
			const job = await this.context(row, parsed.data, abort, keepAlive);
			let result: JobResult;
			try {
				result = await kind.run(job);
			} catch (err) {
				await this.failed(row, kind, err, abort.signal);
				return;
			}
			if (abort.signal.reason === "lease-lost" || abort.signal.reason === "node-stopping") return;
			await this.finish(row, { from: ["running"], to: "succeeded", worker: workerId, result: result.summary, document: result.document ?? null, error: null });
		} finally {
			clearInterval(renew);
		}
	}

	private async failed(row: JobRow, kind: JobKind, err: unknown, signal: AbortSignal): Promise<void> {
		const { workerId, logger } = this.opts;
		// Lost to another worker, or stopping: the job is not ours to record any more.
		if (signal.reason === "lease-lost" || signal.reason === "node-stopping") return;
		if (signal.reason === "cancelled" || err instanceof JobCancelledError) {
			await this.finish(row, { from: ["running"], to: "cancelled", worker: workerId });
			return;
		}
		const error = errorRecord(err);
		if (!isRetryable(err)) {
			await this.finish(row, { from: ["running"], to: "failed", worker: workerId, error });
			return;
		}
		if (row.attempts >= row.max_attempts) {
			logger.warn(`Job ${row.id} (${row.kind}) failed its last attempt (${row.attempts}): dead`, { type: error.type });
			await this.finish(row, { from: ["running"], to: "dead", worker: workerId, error });
			return;
		}
		const delay = backoffMs(kind.retry, row.attempts);
		logger.info(`Job ${row.id} (${row.kind}) attempt ${row.attempts} failed (${error.type}); retry in ${delay} ms`);
		const queued = await this.opts.store.transition(row.id, { from: ["running"], to: "queued", worker: workerId, error, runAfterMs: delay });
		if (queued) this.opts.metrics.retried(row.kind);
		if (queued?.event) this.opts.publish(queued.event);
		// Look again when the wait is over rather than at the next poll, so the waits are the policy's.
		const timer = setTimeout(() => {
			this.retryTimers.delete(timer);
			if (!this.stopping) void this.poll().catch(pollErr => logger.warn("Job poll failed", pollErr));
		}, delay + 5);
		timer.unref();
		this.retryTimers.add(timer);
	}

	private async finish(row: JobRow, change: Parameters<JobStore["transition"]>[1]): Promise<void> {
		const done = await this.opts.store.transition(row.id, change);
		if (done) this.opts.metrics.finished(row.kind, done.row.state);
		if (done?.event) this.opts.publish(done.event);
	}

	/** The JobContext a kind's workflow runs with (see services/jobs/kind.ts). */
	private async context<I>(row: JobRow, input: I, abort: AbortController, keepAlive: () => void): Promise<JobContext<I>> {
		const { store, workerId, broker, metrics } = this.opts;
		const recorded = await store.steps(row.id);
		const meta: ChatmeshMeta = { user: { id: row.owner_id, roles: [] } };
		// A context of no action: the job's calls carry the owner as the caller, as a request of theirs would.
		const ctx = broker.ContextFactory.create(broker) as Context<unknown, ChatmeshMeta>;
		ctx.meta = meta;
		ctx.requestID = `job-${row.id}-${randomUUID().slice(0, 8)}`;
		const throwIfStopped = () => {
			if (abort.signal.aborted) {
				if (abort.signal.reason === "cancelled") throw new JobCancelledError(row.id);
				throw new JobStoppedError(row.id, String(abort.signal.reason));
			}
		};
		return {
			jobId: row.id,
			ownerId: row.owner_id,
			input,
			attempt: row.attempts,
			signal: abort.signal,
			ctx,
			async step<T>(name: string, run: () => Promise<T>): Promise<T> {
				throwIfStopped();
				if (recorded.has(name)) return recorded.get(name) as T;
				const value = await run();
				throwIfStopped();
				const outcome = await store.recordStep(row.id, workerId, name, value === undefined ? null : value, row.attempts);
				if (outcome === "lost") {
					abort.abort("lease-lost");
					throwIfStopped();
				}
				const result = (outcome as { recorded: unknown }).recorded as T;
				metrics.stepRecorded(row.kind);
				recorded.set(name, result);
				keepAlive();
				return result;
			},
			progress: async (progress: JobProgress) => {
				const event = await store.progress(row.id, workerId, progress);
				if (event) this.opts.publish(event);
			}
		};
	}
}

/** The job's run ended for a reason outside it (another worker took it, the node stops). */
class JobStoppedError extends Error {
	constructor(jobId: string, reason: string) {
		super(`Job ${jobId} stopped on this worker: ${reason}`);
		this.name = "JobStoppedError";
	}
}
