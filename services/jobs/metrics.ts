/**
 * The jobs service's metrics (names in lib/metrics.ts): label values bounded to the kinds this
 * node registered (else "other") and the job states, never a job or user id. The queue depth is
 * read from the database at scrape time, one grouped query per DEPTH_CACHE_MS at most however
 * many scrapes come; a failed read keeps the last values and counts the failure.
 */
import type { ServiceBroker } from "moleculer";
import { boundedLabel, CachedRead, increment, observe, onScrape, onScrapeRefresh, setGauge } from "../../lib/metrics";
import type { JobState } from "./kind";
import { FINISHED_STATES } from "./store";

/** The states the depth gauge shows: the work waiting or under way, and the work given up on. */
export const DEPTH_STATES = ["queued", "running", "dead"] as const satisfies readonly JobState[];
export const SCHEDULE_OUTCOMES = ["succeeded", "failed", "skipped"] as const;
export type ScheduleOutcome = (typeof SCHEDULE_OUTCOMES)[number];

/** How long one depth read serves scrapes (several Prometheus servers, or a short interval). */
export const DEPTH_CACHE_MS = 5000;

export interface DepthRow {
	kind: string;
	state: string;
	count: number;
}

/** "kind\u0000state" → count, for every registered kind and depth state (0 when none), "other" for the rest. */
export function depthSeries(rows: readonly DepthRow[], kinds: readonly string[]): Map<string, number> {
	const series = new Map<string, number>();
	for (const kind of kinds) for (const state of DEPTH_STATES) series.set(key(kind, state), 0);
	for (const row of rows) {
		const state = boundedLabel(DEPTH_STATES, row.state);
		if (state === "other") continue;
		const k = key(boundedLabel(kinds, row.kind), state);
		series.set(k, (series.get(k) ?? 0) + Number(row.count));
	}
	return series;
}

const key = (kind: string, state: string) => `${kind}\u0000${state}`;

/** Metrics of one jobs node; every method does nothing with metrics off. */
export class JobsMetrics {
	private readonly kinds: readonly string[];
	private readonly depth: CachedRead<Map<string, number>>;
	private readonly stops: (() => void)[] = [];
	private schedules: readonly string[] = [];
	/** Depth series written so far: one that is no longer read (an unknown kind's jobs gone) goes back to 0. */
	private readonly written = new Set<string>();

	constructor(
		private readonly broker: ServiceBroker,
		kinds: Iterable<string>,
		readDepth: () => Promise<readonly DepthRow[]>,
		opts: { cacheMs?: number; now?: () => number } = {}
	) {
		this.kinds = [...kinds];
		this.depth = new CachedRead(async () => depthSeries(await readDepth(), this.kinds), depthSeries([], this.kinds), {
			ttlMs: opts.cacheMs ?? DEPTH_CACHE_MS,
			now: opts.now,
			onError: err => {
				increment(broker, "jobsDepthReadFailures");
				broker.getLogger("metrics").warn("Could not read the jobs queue depth; keeping the last values", { err: (err as Error).message });
			}
		});
	}

	/** Starts the depth gauge and writes 0 to every counter series, so rates and dashboards have data from the start. */
	start(schedules: readonly string[]): void {
		if (!this.broker.isMetricsEnabled()) return;
		this.schedules = schedules;
		for (const kind of this.kinds) {
			for (const state of FINISHED_STATES) increment(this.broker, "jobsFinished", { kind, state }, 0);
			increment(this.broker, "jobsRetries", { kind }, 0);
			increment(this.broker, "jobsSteps", { kind }, 0);
			for (const when of ["queued", "running"]) increment(this.broker, "jobsCancels", { kind, when }, 0);
		}
		for (const schedule of schedules) for (const outcome of SCHEDULE_OUTCOMES) increment(this.broker, "jobsScheduleRuns", { schedule, outcome }, 0);
		increment(this.broker, "jobsDepthReadFailures", undefined, 0);
		this.stops.push(
			onScrapeRefresh(this.broker, () => this.refreshDepth().then(() => {})),
			onScrape(this.broker, () => this.writeDepth(this.depth.current))
		);
	}

	stop(): void {
		for (const stop of this.stops.splice(0)) stop();
	}

	/** The depth series as the gauge will show them (cached for DEPTH_CACHE_MS). */
	refreshDepth(): Promise<Map<string, number>> {
		return this.depth.get();
	}

	kindLabel(kind: string): string {
		return boundedLabel(this.kinds, kind);
	}

	finished(kind: string, state: JobState): void {
		increment(this.broker, "jobsFinished", { kind: this.kindLabel(kind), state: boundedLabel(FINISHED_STATES, state) });
	}

	/** One run of a job on this worker ended (recorded or not): its time from claim to end. */
	ran(kind: string, seconds: number): void {
		observe(this.broker, "jobsRunDuration", seconds, { kind: this.kindLabel(kind) });
	}

	retried(kind: string): void {
		increment(this.broker, "jobsRetries", { kind: this.kindLabel(kind) });
	}

	stepRecorded(kind: string): void {
		increment(this.broker, "jobsSteps", { kind: this.kindLabel(kind) });
	}

	cancelled(kind: string, when: "queued" | "running"): void {
		increment(this.broker, "jobsCancels", { kind: this.kindLabel(kind), when });
	}

	scheduleRan(schedule: string, outcome: ScheduleOutcome): void {
		increment(this.broker, "jobsScheduleRuns", { schedule: boundedLabel(this.schedules, schedule), outcome });
	}

	private writeDepth(series: Map<string, number>): void {
		for (const k of this.written) if (!series.has(k)) this.setDepth(k, 0);
		for (const [k, count] of series) {
			this.setDepth(k, count);
			this.written.add(k);
		}
	}

	private setDepth(k: string, count: number): void {
		const [kind, state] = k.split("\u0000");
		setGauge(this.broker, "jobsDepth", count, { kind, state });
	}
}
