/**
 * Cron schedules run by jobs nodes. Every jobs node keeps the same timers; at each tick (the
 * cron's nominal time, the same on every node) the nodes race to insert (name, tick) into
 * schedule_runs and only the one whose insert lands runs it: exactly once per tick across the
 * cluster, at most once when that node dies mid-run (the next tick does the work). Croner parses
 * the expressions and computes the ticks (UTC, seconds allowed as a sixth field).
 */
import { Cron } from "croner";
import type { Logger, ServiceBroker } from "moleculer";
import type { Database } from "../../lib/db";
import type { JobsMetrics } from "./metrics";
import { errorRecord } from "./retry";
import type { JobStore } from "./store";

export interface ScheduleDeps {
	broker: ServiceBroker;
	database: Database;
	store: JobStore;
	retentionDays: number;
	metrics: JobsMetrics;
}

export interface Schedule {
	name: string;
	/** Default cron expression (UTC); JOBS_SCHEDULES may replace it or turn it off. */
	cron: string;
	what: string;
	run(deps: ScheduleDeps): Promise<Record<string, unknown>>;
}

const PURGE_BATCH = 1000;

/** The maintenance chatmesh runs on schedules. */
export const MAINTENANCE_SCHEDULES: readonly Schedule[] = [
	{
		name: "quota-reset",
		cron: "* * * * *",
		what: "resets token budgets whose period is over and releases reservations left by stopped nodes (the quota service's own reset)",
		// The quota service keeps its own timer too, so budgets reset on clusters without a jobs
		// node; the reset is idempotent and locked in the database.
		run: async ({ broker }) => broker.call<{ usersReset: number | null }>("quota.reset")
	},
	{
		name: "message-partitions",
		cron: "0 3 * * *",
		what: "creates the monthly message partitions three months ahead",
		run: async ({ database }) => {
			const [row] = await database.query<{ created: number }>("SELECT chatmesh_ensure_message_partitions(now(), 4) AS created");
			return { created: row.created };
		}
	},
	{
		name: "conversation-purge",
		cron: "30 3 * * *",
		what: "deletes conversations soft-deleted more than RETENTION_DAYS ago, with their messages",
		run: async ({ database, retentionDays }) => {
			let deleted = 0;
			// In batches, so one run never holds locks on a large backlog at once.
			for (;;) {
				const rows = await database.query(
					`DELETE FROM conversations WHERE id IN (
						SELECT id FROM conversations WHERE deleted_at < now() - $1 * interval '1 day' LIMIT $2) RETURNING id`,
					[retentionDays, PURGE_BATCH]
				);
				deleted += rows.length;
				if (rows.length < PURGE_BATCH) return { deleted };
			}
		}
	},
	{
		name: "refresh-token-purge",
		cron: "15 * * * *",
		what: "deletes expired refresh tokens (an expired token is refused whether or not its row exists)",
		run: async ({ database }) => {
			const rows = await database.query("DELETE FROM refresh_tokens WHERE expires_at < now() RETURNING id");
			return { deleted: rows.length };
		}
	},
	{
		name: "job-purge",
		cron: "45 3 * * *",
		what: "deletes finished jobs and schedule runs older than RETENTION_DAYS (dead jobs stay until an admin acts)",
		run: async ({ store, retentionDays }) => store.purge(retentionDays)
	}
];

/** The schedules with JOBS_SCHEDULES applied; throws on an expression croner cannot parse. */
export function effectiveSchedules(overrides: Record<string, string>): { schedule: Schedule; cron: string }[] {
	const known = new Set(MAINTENANCE_SCHEDULES.map(s => s.name));
	const unknown = Object.keys(overrides).filter(name => !known.has(name));
	if (unknown.length) throw new Error(`JOBS_SCHEDULES names unknown schedules: ${unknown.join(", ")} (known: ${[...known].join(", ")})`);
	return MAINTENANCE_SCHEDULES.map(schedule => ({ schedule, cron: overrides[schedule.name] ?? schedule.cron }))
		.filter(s => s.cron !== "off")
		.map(s => {
			new Cron(s.cron, { paused: true, timezone: "UTC" });
			return s;
		});
}

export class Scheduler {
	private readonly timers = new Map<string, NodeJS.Timeout>();
	private stopped = false;

	constructor(
		private readonly deps: ScheduleDeps,
		private readonly logger: Logger
	) {}

	start(schedules: { schedule: Schedule; cron: string }[]): void {
		for (const { schedule, cron } of schedules) this.arm(schedule, new Cron(cron, { paused: true, timezone: "UTC" }), new Date());
	}

	stop(): void {
		this.stopped = true;
		for (const timer of this.timers.values()) clearTimeout(timer);
		this.timers.clear();
	}

	/** Runs a schedule now, outside its ticks (REPL, tests); the tick is the current millisecond. */
	async runNow(schedule: Schedule): Promise<{ ran: boolean; result?: Record<string, unknown> }> {
		return this.fire(schedule, new Date());
	}

	private arm(schedule: Schedule, cron: Cron, after: Date): void {
		if (this.stopped) return;
		const tick = cron.nextRun(after);
		if (!tick) return;
		const timer = setTimeout(
			() => {
				// A node that fell behind (a long pause) skips to the next tick rather than catching up.
				const late = Date.now() - tick.getTime();
				void this.fire(schedule, tick).finally(() => this.arm(schedule, cron, late > 1000 ? new Date() : tick));
			},
			Math.max(0, tick.getTime() - Date.now())
		);
		timer.unref();
		this.timers.set(schedule.name, timer);
	}

	private async fire(schedule: Schedule, tick: Date): Promise<{ ran: boolean; result?: Record<string, unknown> }> {
		const { store, broker, metrics } = this.deps;
		try {
			if (!(await store.claimTick(schedule.name, tick, broker.nodeID))) {
				metrics.scheduleRan(schedule.name, "skipped");
				return { ran: false };
			}
		} catch (err) {
			this.logger.warn(`Schedule ${schedule.name}: could not claim tick ${tick.toISOString()}`, err);
			metrics.scheduleRan(schedule.name, "failed");
			return { ran: false };
		}
		try {
			const result = await schedule.run(this.deps);
			this.logger.info(`Schedule ${schedule.name} ran for tick ${tick.toISOString()}`, result);
			metrics.scheduleRan(schedule.name, "succeeded");
			await store.finishTick(schedule.name, tick, { result });
			return { ran: true, result };
		} catch (err) {
			this.logger.warn(`Schedule ${schedule.name} failed for tick ${tick.toISOString()}`, err);
			metrics.scheduleRan(schedule.name, "failed");
			await store
				.finishTick(schedule.name, tick, { error: errorRecord(err) })
				.catch(recordErr => this.logger.warn(`Schedule ${schedule.name}: could not record the failed run`, recordErr));
			return { ran: true };
		}
	}
}
