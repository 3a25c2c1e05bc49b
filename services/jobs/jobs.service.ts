/**
 * jobs: durable long-running workflows and the maintenance schedules. The `jobs` table is the
 * record of every job and the queue; the `jobs.work` channel (@moleculer/channels: NATS JetStream
 * in a cluster, in-process on one node) only says that work is waiting. A worker woken by a
 * message claims the most urgent runnable job from the database (FOR UPDATE SKIP LOCKED), runs
 * it and acknowledges the message once the job's state is recorded. Priorities live in the
 * database because a JetStream stream delivers in publish order: a message naming one job would
 * make a high-priority job wait behind every low one published before it. A worker that dies
 * leaves its message unacknowledged (redelivered after the ack wait) and its lease to expire, and
 * a live worker claims the job again and skips the steps already recorded. A timer polls too, so
 * retries whose backoff is over, and jobs whose wake-up was lost (a NATS outage, a restart), run.
 */
import { randomUUID } from "node:crypto";
import type { Context, ServiceSchema } from "moleculer";
import { ownedEntity } from "../../middlewares/auth.middleware";
import { callerOf, ROLE_ADMIN, type ChatmeshMeta } from "../../lib/auth";
import { decodeCursor, pageOf } from "../../lib/cursor";
import {
	ChatmeshClientError,
	ERR_JOB_FINISHED,
	ERR_JOB_NOT_DEAD,
	ERR_NO_JOB_RESULT,
	ERR_TOO_MANY_JOBS,
	ERR_UNKNOWN_JOB_KIND,
	ERR_VALIDATION,
	NotFoundError
} from "../../lib/errors";
import { NODE_STOPPING_EVENT, runtimeOf } from "../../lib/runtime";
import { JOB_CANCEL_EVENT, JOB_EVENT } from "./events";
import { JOB_STATES, type JobDocument, type JobKind, type JobState } from "./kind";
import { JobsMetrics } from "./metrics";
import { jobKinds } from "./registry";
import { JobRunner } from "./runner";
import { effectiveSchedules, MAINTENANCE_SCHEDULES, Scheduler } from "./schedules";
import { JobStore, jobView, type JobEvent, type JobRow, type JobView } from "./store";

/** The channel whose messages wake workers. */
export const WORK_CHANNEL = "jobs.work";

export interface SubmitParams {
	kind: string;
	input?: unknown;
	priority?: number;
}

export interface JobPage {
	items: JobView[];
	nextCursor: string | null;
}

export interface QueueDepth {
	kind: string;
	state: JobState;
	count: number;
}

export interface JobEventsResult {
	ownerId: string;
	state: JobState;
	events: JobEvent[];
}

interface JobsSettings {
	/** Highest and lowest priority a client may ask for. */
	maxPriority: number;
}

interface JobsVars {
	store: JobStore;
	runner: JobRunner;
	scheduler: Scheduler;
	kinds: ReadonlyMap<string, JobKind>;
	metrics: JobsMetrics;
	pollTimer?: NodeJS.Timeout;
}

interface JobsMethods {
	ownedJob(id: string): Promise<(JobRow & { ownerId: string }) | undefined>;
	wake(): Promise<void>;
	publishEvent(event: JobEvent): void;
}

type Ctx<P = Record<string, never>> = Context<P, ChatmeshMeta>;
type OwnedJob = JobRow & { ownerId: string };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const uuid = { type: "uuid" } as const;
const pageParams = {
	limit: { type: "number", integer: true, min: 1, max: 100, default: 20, convert: true },
	cursor: { type: "string", optional: true, max: 200 }
} as const;

const JobsService: ServiceSchema<JobsSettings, JobsMethods & Record<string, never>, JobsVars> = {
	name: "jobs",

	settings: {
		maxPriority: 100
	},

	actions: {
		/** Queues a job of a known kind for the caller: 202 {jobId} with its Location. */
		submit: {
			auth: "required",
			params: {
				kind: { type: "string", min: 1, max: 64 },
				input: { type: "any", optional: true },
				priority: { type: "number", integer: true, min: -100, max: 100, optional: true, convert: true }
			},
			async handler(ctx: Ctx<SubmitParams>): Promise<{ jobId: string; state: JobState }> {
				const user = callerOf(ctx);
				const kind = this.kinds.get(ctx.params.kind);
				if (!kind)
					throw new ChatmeshClientError(`Unknown job kind '${ctx.params.kind}'`, ERR_UNKNOWN_JOB_KIND, {
						kind: ctx.params.kind,
						known: [...this.kinds.keys()]
					});
				const parsed = kind.input.safeParse(ctx.params.input ?? {});
				if (!parsed.success)
					throw new ChatmeshClientError("The job's input does not fit its kind", ERR_VALIDATION, {
						kind: kind.name,
						issues: parsed.error.issues.slice(0, 20).map(i => ({ path: i.path.map(String).join("."), message: i.message }))
					});
				const { maxActivePerUser } = runtimeOf(this.broker).config.jobs;
				const row = await this.store.insert(
					{ kind: kind.name, ownerId: user.id, input: parsed.data, priority: ctx.params.priority ?? 0, maxAttempts: kind.retry.maxAttempts },
					maxActivePerUser
				);
				if (!row)
					throw new ChatmeshClientError(`At most ${maxActivePerUser} jobs may be queued or running at once`, ERR_TOO_MANY_JOBS, { limit: maxActivePerUser });
				await this.wake();
				ctx.meta.$statusCode = 202;
				// moleculer-web sends $location only with 201 and redirects; a 202 carries it as a header.
				ctx.meta.$responseHeaders = { ...ctx.meta.$responseHeaders, Location: `/api/jobs/${row.id}` };
				return { jobId: row.id, state: row.state };
			}
		},

		/** A job of the caller's: state, progress, attempts, result summary or error. */
		get: {
			params: { id: uuid },
			owner: { resource: "job", load: "ownedJob" },
			async handler(ctx: Ctx<{ id: string }>): Promise<JobView> {
				return jobView(ownedEntity<OwnedJob>(ctx));
			}
		},

		/** The caller's jobs, newest first. */
		list: {
			auth: "required",
			params: { ...pageParams, state: { type: "enum", values: [...JOB_STATES], optional: true } },
			async handler(ctx: Ctx<{ cursor?: string; limit: number; state?: JobState }>): Promise<JobPage> {
				const user = callerOf(ctx);
				const rows = await this.store.list({ ownerId: user.id, state: ctx.params.state }, ctx.params.limit + 1, decodeCursor(ctx.params.cursor));
				const page = pageOf(rows, ctx.params.limit, r => ({ at: r.created_at, id: r.id }));
				return { items: page.items.map(jobView), nextCursor: page.nextCursor };
			}
		},

		/**
		 * Cancels a job: a queued one at once; a running one is asked to stop (its worker aborts
		 * the job's signal at once and the workflow stops before its next step). A finished job is
		 * 409 JOB_FINISHED and stays as it is.
		 */
		cancel: {
			params: { id: uuid },
			owner: { resource: "job", load: "ownedJob" },
			async handler(ctx: Ctx<{ id: string }>): Promise<JobView> {
				const id = ctx.params.id;
				const queued = await this.store.transition(id, { from: ["queued"], to: "cancelled" });
				if (queued) {
					this.metrics.cancelled(queued.row.kind, "queued");
					this.metrics.finished(queued.row.kind, "cancelled");
					if (queued.event) this.publishEvent(queued.event);
					return jobView(queued.row);
				}
				const running = await this.store.requestCancel(id);
				if (running) {
					this.metrics.cancelled(running.kind, "running");
					await ctx.broadcast(JOB_CANCEL_EVENT, { jobId: id });
					ctx.meta.$statusCode = 202;
					return jobView(running);
				}
				const now = await this.store.get(id);
				if (!now) throw new NotFoundError("job", id);
				throw new ChatmeshClientError(`The job has already ended (${now.state})`, ERR_JOB_FINISHED, { jobId: id, state: now.state });
			}
		},

		/** The document a finished job made (GET /api/jobs/:id/result). */
		result: {
			params: { id: uuid },
			owner: { resource: "job", load: "ownedJob" },
			async handler(ctx: Ctx<{ id: string }>): Promise<JobDocument> {
				const job = ownedEntity<OwnedJob>(ctx);
				const document = job.state === "succeeded" ? await this.store.document(job.id) : undefined;
				if (!document) throw new ChatmeshClientError("The job has no result document (yet)", ERR_NO_JOB_RESULT, { jobId: job.id, state: job.state });
				return document;
			}
		},

		/** The job's numbered events after `after` (the SSE stream's replay). */
		events: {
			params: { id: uuid, after: { type: "number", integer: true, min: 0, default: 0, convert: true } },
			owner: { resource: "job", load: "ownedJob" },
			async handler(ctx: Ctx<{ id: string; after: number }>): Promise<JobEventsResult> {
				const job = ownedEntity<OwnedJob>(ctx);
				return { ownerId: job.owner_id, state: job.state, events: await this.store.eventsAfter(job.id, ctx.params.after) };
			}
		},

		/** Admin: every user's jobs, filtered by state and kind, and the queue depth per kind. */
		adminList: {
			roles: [ROLE_ADMIN],
			params: { ...pageParams, state: { type: "enum", values: [...JOB_STATES], optional: true }, kind: { type: "string", optional: true, max: 64 } },
			async handler(ctx: Ctx<{ cursor?: string; limit: number; state?: JobState; kind?: string }>): Promise<JobPage & { depth: QueueDepth[] }> {
				const rows = await this.store.list({ state: ctx.params.state, kind: ctx.params.kind }, ctx.params.limit + 1, decodeCursor(ctx.params.cursor));
				const page = pageOf(rows, ctx.params.limit, r => ({ at: r.created_at, id: r.id }));
				return { items: page.items.map(jobView), nextCursor: page.nextCursor, depth: await this.store.depth() };
			}
		},

		/** Queued, running and dead jobs per kind (REPL: `call jobs.depth`). */
		depth: {
			visibility: "public",
			params: {},
			async handler(): Promise<QueueDepth[]> {
				return this.store.depth();
			}
		},

		/** Admin: a dead (or failed) job goes back to the queue with its attempts reset; its recorded steps stay. */
		retry: {
			roles: [ROLE_ADMIN],
			params: { id: uuid },
			async handler(ctx: Ctx<{ id: string }>): Promise<JobView> {
				const moved = await this.store.transition(ctx.params.id, { from: ["dead", "failed"], to: "queued", resetAttempts: true, runAfterMs: 0 });
				if (!moved) {
					const job = await this.store.get(ctx.params.id);
					if (!job) throw new NotFoundError("job", ctx.params.id);
					throw new ChatmeshClientError(`Only a dead or failed job can be retried (this one is ${job.state})`, ERR_JOB_NOT_DEAD, {
						jobId: job.id,
						state: job.state
					});
				}
				await this.wake();
				return jobView(moved.row);
			}
		},

		/** Admin: a dead job is given up (cancelled, its last error kept under `cause`). */
		discard: {
			roles: [ROLE_ADMIN],
			params: { id: uuid },
			async handler(ctx: Ctx<{ id: string }>): Promise<JobView> {
				const job = await this.store.get(ctx.params.id);
				if (!job) throw new NotFoundError("job", ctx.params.id);
				const moved =
					job.state === "dead"
						? await this.store.transition(job.id, {
								from: ["dead"],
								to: "cancelled",
								error: { type: "DISCARDED", message: "Discarded by an admin", cause: job.error }
							})
						: undefined;
				if (!moved)
					throw new ChatmeshClientError(`Only a dead job can be discarded (this one is ${job.state})`, ERR_JOB_NOT_DEAD, { jobId: job.id, state: job.state });
				if (moved.event) this.publishEvent(moved.event);
				return jobView(moved.row);
			}
		},

		/** The maintenance schedules and their cron expressions on this node (REPL). */
		schedules: {
			visibility: "public",
			params: {},
			handler(): { name: string; cron: string; what: string }[] {
				return effectiveSchedules(runtimeOf(this.broker).config.jobs.schedules).map(({ schedule, cron }) => ({
					name: schedule.name,
					cron,
					what: schedule.what
				}));
			}
		},

		/** Runs one maintenance schedule now, once across the cluster (REPL: `call jobs.runSchedule --name quota-reset`). */
		runSchedule: {
			visibility: "public",
			params: { name: { type: "enum", values: MAINTENANCE_SCHEDULES.map(s => s.name) } },
			async handler(ctx: Context<{ name: string }>): Promise<{ ran: boolean; result?: Record<string, unknown> }> {
				const schedule = MAINTENANCE_SCHEDULES.find(s => s.name === ctx.params.name);
				if (!schedule) throw new NotFoundError("schedule", ctx.params.name);
				return this.scheduler.runNow(schedule);
			}
		}
	},

	channels: {
		[WORK_CHANNEL]: {
			async handler(this: { runner: JobRunner }, _payload: unknown, raw: unknown) {
				const message = raw as { working?: () => void } | undefined;
				await this.runner.handleWake(() => message?.working?.());
			}
		}
	},

	events: {
		/** A job was cancelled: the worker running it stops it now. */
		[JOB_CANCEL_EVENT]: {
			params: { jobId: { type: "string" } },
			handler(ctx: Context<{ jobId: string }>) {
				if (this.runner.abort(ctx.params.jobId, "cancelled")) this.logger.info(`Job ${ctx.params.jobId} cancelled: aborting it`);
			}
		},

		/** A node left: its running jobs are claimed again without waiting for their leases. */
		"$node.disconnected": {
			async handler(ctx: Context<{ node: { id: string }; unexpected?: boolean }>) {
				if (!ctx.params.unexpected) return;
				const released = await this.store.releaseLeases({ node: ctx.params.node.id }, false).catch(err => {
					this.logger.warn("Could not release the leases of a lost node", err);
					return 0;
				});
				if (released) {
					this.logger.info(`Node ${ctx.params.node.id} was lost with ${released} running job(s): claiming them again`);
					await this.runner.poll().catch(err => this.logger.warn("Job poll failed", err));
				}
			}
		},

		/** The node begins to stop: running jobs are given up for other workers before the channel drains. */
		async [NODE_STOPPING_EVENT]() {
			clearInterval(this.pollTimer);
			this.scheduler.stop();
			await this.runner.stop();
		}
	},

	methods: {
		async ownedJob(id: string) {
			if (!UUID.test(id)) return undefined;
			const row = await this.store.get(id);
			return row ? { ...row, ownerId: row.owner_id } : undefined;
		},

		/**
		 * Tells a worker that work is waiting, without waiting for the channel: the job is already
		 * recorded, and a wake-up lost (NATS away or reconnecting) only delays it until a poll.
		 */
		async wake() {
			const send = (this.broker as unknown as { sendToChannel?: (name: string, payload: unknown) => Promise<void> }).sendToChannel;
			void Promise.resolve()
				.then(() => send?.call(this.broker, WORK_CHANNEL, { at: Date.now() }))
				.catch(err => this.logger.warn("Could not publish a job wake-up; workers will find the job by polling", err));
			// A worker on this node with a free slot need not wait for the message to come back.
			await this.runner.poll().catch(err => this.logger.warn("Job poll failed", err));
		},

		publishEvent(event: JobEvent) {
			this.broker.broadcast(JOB_EVENT, event).catch((err: unknown) => this.logger.warn(`Could not broadcast job event ${event.type}`, err));
		}
	},

	created() {
		const { database, config } = runtimeOf(this.broker);
		if (!database) throw new Error("jobs service needs the database");
		this.store = new JobStore(database);
		this.kinds = jobKinds();
		const store = this.store;
		this.metrics = new JobsMetrics(this.broker, this.kinds.keys(), () => store.depth());
		this.runner = new JobRunner({
			broker: this.broker,
			logger: this.logger,
			store: this.store,
			kinds: this.kinds,
			// A restarted process is a new worker: its predecessor's leases are not its own.
			workerId: `${this.broker.nodeID}:${randomUUID().slice(0, 8)}`,
			concurrency: config.jobs.concurrency,
			leaseMs: config.jobs.leaseMs,
			publish: event => this.publishEvent(event),
			metrics: this.metrics
		});
		this.scheduler = new Scheduler(
			{ broker: this.broker, database, store: this.store, retentionDays: config.jobs.retentionDays, metrics: this.metrics },
			this.logger
		);
	},

	async started() {
		const { config } = runtimeOf(this.broker);
		// One process owns the embedded database: whatever ran there before ran in a process now gone.
		if (config.transporter.length === 0) {
			const released = await this.store.releaseLeases({}, false);
			if (released) this.logger.info(`Resuming ${released} job(s) that were running when the node stopped`);
		}
		const schedules = effectiveSchedules(config.jobs.schedules);
		this.metrics.start(MAINTENANCE_SCHEDULES.map(s => s.name));
		this.scheduler.start(schedules);
		this.pollTimer = setInterval(() => void this.runner.poll().catch(err => this.logger.warn("Job poll failed", err)), config.jobs.pollMs);
		this.pollTimer.unref();
		void this.runner.poll().catch(err => this.logger.warn("Job poll failed", err));
		this.logger.info(`Jobs worker ${this.runner.workerId}: ${config.jobs.concurrency} at once, kinds: ${[...this.kinds.keys()].join(", ") || "none"}`);
	},

	async stopped() {
		this.metrics.stop();
		clearInterval(this.pollTimer);
		this.scheduler.stop();
		await this.runner.stop();
	}
};

export default JobsService;
