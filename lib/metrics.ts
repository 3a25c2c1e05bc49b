/**
 * chatmesh's own metrics: every name, label set and bucket list in one place, registered in the
 * broker's Moleculer metric registry (exported by its Prometheus reporter, see
 * ./metrics-reporter.ts) and written through the small helpers below from where things happen.
 *
 * The names are the exported Prometheus names as they are: the reporter adds no prefix and no
 * suffix to a counter or gauge, and `_bucket`, `_sum` and `_count` to a histogram. The seed's
 * three (`llm_requests_total`, `llm_latency_seconds`, `active_conversations`) keep its names; the
 * rest carry a `chatmesh_` prefix. Label values are bounded: models beyond the first
 * MAX_MODEL_LABELS seen are "other", routes are templates, errors are type codes.
 *
 * With metrics off (no METRICS_PORT) nothing is registered and every helper does nothing, so
 * callers never check.
 * Values that are cheaper to read than to count (gauges of live things) are read at scrape time
 * by collectors (`onScrape`), so hot paths do not pay for them.
 */
import { type MetricRegistry, MetricTypes, type ServiceBroker } from "moleculer";

type MetricType = "counter" | "gauge" | "histogram";

interface MetricDefinition {
	name: string;
	type: MetricType;
	labelNames: readonly string[];
	description: string;
	buckets?: readonly number[];
}

/** Seconds: from a few milliseconds to two minutes (first tokens, whole answers). */
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120] as const;
/** Seconds between two chunks of one answer: sub-millisecond to a stalled second. */
export const GAP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5] as const;
const TOOL_BUCKETS = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30] as const;
/** Seconds a job's run takes: from a short export to a long report (an hour at most). */
const JOB_RUN_BUCKETS = [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600] as const;

const define = <T extends Record<string, MetricDefinition>>(defs: T) => defs;

export const METRICS = define({
	llmRequests: {
		name: "llm_requests_total",
		type: "counter",
		labelNames: ["model", "status", "provider"],
		description: "Chat requests (turns and completions) by the model that answered and their final status"
	},
	llmLatency: {
		name: "llm_latency_seconds",
		type: "histogram",
		labelNames: ["model", "provider"],
		buckets: LATENCY_BUCKETS,
		description: "Time from a chat request to its final status"
	},
	activeConversations: {
		name: "active_conversations",
		type: "gauge",
		labelNames: [],
		description: "Conversations with an answer streaming now (on this conversation node)"
	},
	timeToFirstToken: {
		name: "chatmesh_llm_time_to_first_token_seconds",
		type: "histogram",
		labelNames: ["model"],
		buckets: LATENCY_BUCKETS,
		description: "Time from a generation's start (queueing included) to its first token"
	},
	interTokenGap: {
		name: "chatmesh_llm_inter_token_seconds",
		type: "histogram",
		labelNames: ["model"],
		buckets: GAP_BUCKETS,
		description: "Gap between two chunks of one streamed answer"
	},
	promptTokens: {
		name: "chatmesh_llm_prompt_tokens_total",
		type: "counter",
		labelNames: ["model"],
		description: "Prompt tokens sent to models"
	},
	completionTokens: {
		name: "chatmesh_llm_completion_tokens_total",
		type: "counter",
		labelNames: ["model"],
		description: "Completion tokens produced by models"
	},
	generationsInFlight: {
		name: "chatmesh_llm_generations_in_flight",
		type: "gauge",
		labelNames: [],
		description: "Generations running or queued on this llm node"
	},
	providerErrors: {
		name: "chatmesh_llm_provider_errors_total",
		type: "counter",
		labelNames: ["provider", "kind"],
		description: "Failed provider attempts by error type (timeouts, rate limits, errors, refusals, skipped with the circuit open)"
	},
	breakerState: {
		name: "chatmesh_llm_breaker_state",
		type: "gauge",
		labelNames: ["provider", "state"],
		description: "1 for the current circuit-breaker state of each provider on this llm node (closed, open, half-open), else 0"
	},
	httpRequests: {
		name: "chatmesh_http_requests_total",
		type: "counter",
		labelNames: ["route", "method", "status"],
		description: "HTTP requests answered by the gateway, by route template and status code"
	},
	socketConnections: {
		name: "chatmesh_socketio_connections",
		type: "gauge",
		labelNames: [],
		description: "socket.io connections open on this gateway"
	},
	socketEvents: {
		name: "chatmesh_socketio_events_total",
		type: "counter",
		labelNames: ["event"],
		description: "socket.io events received from clients, by event name"
	},
	sseStreams: {
		name: "chatmesh_sse_streams_open",
		type: "gauge",
		labelNames: [],
		description: "Server-sent event streams open on this gateway"
	},
	rateLimitRefusals: {
		name: "chatmesh_rate_limit_refusals_total",
		type: "counter",
		labelNames: ["scope"],
		description: "Requests refused by a rate limit (scope: ip, user, login)"
	},
	quotaRefusals: {
		name: "chatmesh_quota_refusals_total",
		type: "counter",
		labelNames: [],
		description: "Model calls refused because the user's token budget was spent"
	},
	moderationVerdicts: {
		name: "chatmesh_moderation_verdicts_total",
		type: "counter",
		labelNames: ["check", "verdict", "direction"],
		description: "Moderation verdicts of each check (allow, flag, block) by direction (input, output, tool)"
	},
	toolExecutions: {
		name: "chatmesh_tool_executions_total",
		type: "counter",
		labelNames: ["tool", "status"],
		description: "Tool executions by tool and status (success, error, timeout)"
	},
	toolDuration: {
		name: "chatmesh_tool_execution_seconds",
		type: "histogram",
		labelNames: ["tool"],
		buckets: TOOL_BUCKETS,
		description: "Duration of tool executions"
	},
	logEventsWritten: {
		name: "chatmesh_generation_log_events_written_total",
		type: "counter",
		labelNames: [],
		description: "Events of streamed answers stored in the replay log by this node"
	},
	logEventsDelivered: {
		name: "chatmesh_generation_log_events_delivered_total",
		type: "counter",
		labelNames: [],
		description: "Replay-log events delivered to watching clients by this node"
	},
	logWriteBacklog: {
		name: "chatmesh_generation_log_write_backlog",
		type: "gauge",
		labelNames: [],
		description: "Events appended on this node but not yet confirmed stored by the replay log"
	},
	dbPoolWaiting: {
		name: "chatmesh_db_pool_waiting",
		type: "gauge",
		labelNames: [],
		description: "Queries waiting for a database connection on this node"
	},
	dbPoolConnections: {
		name: "chatmesh_db_pool_connections",
		type: "gauge",
		labelNames: ["state"],
		description: "Database pool connections on this node (idle, busy)"
	},
	moderationFailOpen: {
		name: "chatmesh_moderation_failopen_total",
		type: "counter",
		labelNames: ["direction"],
		description: "Output and tool checks allowed because moderation.check failed"
	},
	loginFailuresUncounted: {
		name: "chatmesh_login_failures_uncounted_total",
		type: "counter",
		labelNames: [],
		description: "Failed sign-ins that the brute-force limit could not count"
	},
	jobsDepth: {
		name: "chatmesh_jobs_depth",
		type: "gauge",
		labelNames: ["kind", "state"],
		description: "Jobs queued, running and dead per kind (read from the database by each jobs node; the same on every one)"
	},
	jobsDepthReadFailures: {
		name: "chatmesh_jobs_depth_read_failures_total",
		type: "counter",
		labelNames: [],
		description: "Queue-depth reads that failed (the depth gauge kept its last values)"
	},
	jobsFinished: {
		name: "chatmesh_jobs_finished_total",
		type: "counter",
		labelNames: ["kind", "state"],
		description: "Jobs that ended, by kind and final state (succeeded, failed, cancelled, dead)"
	},
	jobsRunDuration: {
		name: "chatmesh_jobs_run_seconds",
		type: "histogram",
		labelNames: ["kind"],
		buckets: JOB_RUN_BUCKETS,
		description: "Duration of a job's run on a worker, from its claim to its end (one observation per attempt)"
	},
	jobsRetries: {
		name: "chatmesh_jobs_retries_total",
		type: "counter",
		labelNames: ["kind"],
		description: "Failed attempts queued again for another attempt after a backoff"
	},
	jobsSteps: {
		name: "chatmesh_jobs_steps_total",
		type: "counter",
		labelNames: ["kind"],
		description: "Workflow steps run and recorded (a step recorded earlier and skipped on redelivery is not counted)"
	},
	jobsCancels: {
		name: "chatmesh_jobs_cancels_total",
		type: "counter",
		labelNames: ["kind", "when"],
		description: "Cancels accepted, by the job's state then (queued: cancelled at once; running: asked to stop)"
	},
	jobsScheduleRuns: {
		name: "chatmesh_jobs_schedule_runs_total",
		type: "counter",
		labelNames: ["schedule", "outcome"],
		description: "Schedule ticks on this node by outcome (succeeded, failed; skipped: another node ran the tick)"
	},
	processCpu: {
		name: "chatmesh_process_cpu_seconds_total",
		type: "counter",
		labelNames: [],
		description: "CPU time of this node's process (user and system)"
	}
});

export type MetricKey = keyof typeof METRICS;
export type Labels = Record<string, string>;
/** Label values as Moleculer's own series carry them (a caller or a level may be null or a number). */
export type SeriesLabels = Record<string, string | number | null>;

interface PendingEntry {
	labels?: SeriesLabels;
	/** Written to since the last drain. */
	unwritten: boolean;
}

/**
 * What a batched metric holds for its series until it writes them to the registry: one entry per
 * series, found by its label values (in the metric's label order) in nested maps, so a write builds
 * no hash string. `touch` lists the entry for the next `drain`. An entry keeps the labels object
 * its series was first seen with.
 */
export class PendingSeries<T extends PendingEntry> {
	private readonly root = new Map<unknown, unknown>();
	private readonly touched: T[] = [];

	constructor(
		private readonly labelNames: readonly string[],
		private readonly create: (labels: SeriesLabels | undefined) => T
	) {}

	touch(labels?: SeriesLabels): T {
		let level = this.root;
		const names = this.labelNames;
		for (let i = 0; i < names.length - 1; i++) {
			const value = labels?.[names[i]];
			let next = level.get(value) as Map<unknown, unknown> | undefined;
			if (!next) {
				next = new Map();
				level.set(value, next);
			}
			level = next;
		}
		const last = names.length > 0 ? labels?.[names[names.length - 1]] : undefined;
		let entry = level.get(last) as T | undefined;
		if (entry === undefined) {
			entry = this.create(labels);
			level.set(last, entry);
		}
		if (!entry.unwritten) {
			entry.unwritten = true;
			this.touched.push(entry);
		}
		return entry;
	}

	/** The entries touched since the last drain, which are then no longer listed. */
	drain(): T[] {
		const touched = this.touched.splice(0);
		for (const entry of touched) entry.unwritten = false;
		return touched;
	}
}

interface PendingNumber extends PendingEntry {
	value: number;
}

const pendingNumber = (labels: SeriesLabels | undefined): PendingNumber => ({ value: 0, labels, unwritten: false });

/**
 * A gauge whose `set` keeps the last value of each series until `flush` writes it to the
 * registry: for gauges set on every call (the bulkhead's). Reading the gauge (`get`, `snapshot`)
 * flushes first, so no reader sees an old value.
 */
export class BatchedGauge extends MetricTypes.Gauge {
	private readonly pending = new PendingSeries(this.labelNames, pendingNumber);

	override set(value: number, labels?: SeriesLabels): void {
		this.pending.touch(labels).value = value;
	}

	override increment(labels?: SeriesLabels, value = 1): void {
		this.flush();
		super.set(((super.get(labels)?.value as number | undefined) ?? 0) + value, labels);
	}

	override decrement(labels?: SeriesLabels, value = 1): void {
		this.increment(labels, -value);
	}

	override get(labels?: SeriesLabels): ReturnType<InstanceType<typeof MetricTypes.Gauge>["get"]> {
		this.flush();
		return super.get(labels);
	}

	override snapshot(): ReturnType<InstanceType<typeof MetricTypes.Gauge>["snapshot"]> {
		this.flush();
		return super.snapshot();
	}

	flush(): void {
		for (const entry of this.pending.drain()) super.set(entry.value, entry.labels);
	}
}
MetricTypes.register("BatchedGauge", BatchedGauge as unknown as Parameters<typeof MetricTypes.register>[1]);

/**
 * A counter whose increments add up beside it and reach the registry's series when it is read
 * (`get`, `snapshot`: every scrape) or `set`: a registry increment hashes the labels twice, takes a
 * timestamp and announces the change, on every call. chatmesh's counters are of this type.
 */
export class BatchedCounter extends MetricTypes.Counter {
	private readonly pending = new PendingSeries(this.labelNames, pendingNumber);

	override increment(labels?: SeriesLabels, value?: number): void {
		this.pending.touch(labels).value += value ?? 1;
	}

	override set(value: number, labels?: SeriesLabels, timestamp?: number): void {
		this.flush();
		super.set(value, labels, timestamp);
	}

	override get(labels?: SeriesLabels): ReturnType<InstanceType<typeof MetricTypes.Counter>["get"]> {
		this.flush();
		return super.get(labels);
	}

	override snapshot(): ReturnType<InstanceType<typeof MetricTypes.Counter>["snapshot"]> {
		this.flush();
		return super.snapshot();
	}

	flush(): void {
		for (const entry of this.pending.drain()) {
			const item = super.get(entry.labels) as { value?: number } | null;
			super.set((item?.value ?? 0) + entry.value, entry.labels);
			entry.value = 0;
		}
	}
}
MetricTypes.register("BatchedCounter", BatchedCounter as unknown as Parameters<typeof MetricTypes.register>[1]);

/** Chat request statuses (the assistant message's final states). */
export type RequestStatus = "completed" | "cancelled" | "failed" | "blocked" | "interrupted";

/** How many distinct model names get their own label value on one node; the rest are "other". */
export const MAX_MODEL_LABELS = 32;

interface NodeMetrics {
	models: Set<string>;
	collectors: Set<() => void>;
	refreshers: Set<() => Promise<void>>;
}

const nodes = new WeakMap<ServiceBroker, NodeMetrics>();

function stateOf(broker: ServiceBroker): NodeMetrics {
	let state = nodes.get(broker);
	if (!state) {
		state = { models: new Set(), collectors: new Set(), refreshers: new Set() };
		nodes.set(broker, state);
	}
	return state;
}

/** Registers every chatmesh metric in the broker's registry (once; nothing when metrics are off). */
export function registerChatmeshMetrics(broker: ServiceBroker): void {
	if (!broker.isMetricsEnabled()) return;
	for (const key of Object.keys(METRICS) as MetricKey[]) ensureMetric(broker.metrics, key);
}

/** Registers one metric unless it is there (for code handed a registry alone, e.g. in unit tests). */
export function ensureMetric(registry: MetricRegistry, key: MetricKey): void {
	const def: MetricDefinition = METRICS[key];
	if (!registry.isEnabled() || registry.hasMetric(def.name)) return;
	registry.register({
		name: def.name,
		// Counters and histograms are written on hot paths (every stream, every moderation verdict).
		type: def.type === "counter" ? "BatchedCounter" : def.type === "histogram" ? "BatchedHistogram" : def.type,
		labelNames: [...def.labelNames],
		description: def.description,
		...(def.buckets ? { buckets: [...def.buckets] } : {}),
		// The reporter would print a `_rate` series beside each; Prometheus computes rates itself.
		rate: false
	} as unknown as Parameters<MetricRegistry["register"]>[0]);
}

/** A model name as a label value: one of the first MAX_MODEL_LABELS seen on this node, else "other". */
export function modelLabel(broker: ServiceBroker, model: string | null | undefined): string {
	if (!model) return "unknown";
	const { models } = stateOf(broker);
	if (models.has(model)) return model;
	if (models.size >= MAX_MODEL_LABELS) return "other";
	models.add(model);
	return model;
}

/**
 * The registered metric, or undefined: metrics off (also when the registry is switched off at run
 * time: its own write methods check that flag, a metric's do not), or a broker built without
 * chatmesh's middlewares.
 */
function metricOf<T>(broker: ServiceBroker, key: MetricKey): T | undefined {
	return metricIn<T>(broker.metrics, key);
}

function metricIn<T>(registry: MetricRegistry | undefined, key: MetricKey): T | undefined {
	if (!registry?.isEnabled()) return undefined;
	return (registry.getMetric(METRICS[key].name) ?? undefined) as T | undefined;
}

/** `increment` for code that holds the registry rather than the broker. */
export function incrementIn(registry: MetricRegistry | undefined, key: MetricKey, labels?: Labels, value = 1): void {
	metricIn<{ increment(l?: Labels, v?: number): void }>(registry, key)?.increment(labels, value);
}

export function increment(broker: ServiceBroker, key: MetricKey, labels?: Labels, value = 1): void {
	metricOf<{ increment(l?: Labels, v?: number): void }>(broker, key)?.increment(labels, value);
}

export function setGauge(broker: ServiceBroker, key: MetricKey, value: number, labels?: Labels): void {
	metricOf<{ set(v: number, l?: Labels): void }>(broker, key)?.set(value, labels);
}

/** A counter kept elsewhere as a running total (read at scrape time), written as it is. */
export function setTotal(broker: ServiceBroker, key: MetricKey, total: number): void {
	metricOf<{ set(v: number): void }>(broker, key)?.set(total);
}

export function observe(broker: ServiceBroker, key: MetricKey, value: number, labels?: Labels): void {
	metricOf<{ observe(v: number, l?: Labels): void }>(broker, key)?.observe(value, labels);
}

/**
 * Runs `collect` before every scrape of this node's metrics (it sets gauges from live state).
 * Returns the function that removes it.
 */
export function onScrape(broker: ServiceBroker, collect: () => void): () => void {
	const { collectors } = stateOf(broker);
	collectors.add(collect);
	return () => collectors.delete(collect);
}

/** Called by the reporter before it prints the registry. A failing collector leaves its gauges as they were. */
export function runScrapeCollectors(broker: ServiceBroker): void {
	for (const collect of stateOf(broker).collectors) {
		try {
			collect();
		} catch (err) {
			broker.getLogger("metrics").warn("A metrics collector failed", { err: (err as Error).message });
		}
	}
}

/**
 * Runs `refresh` before every scrape, for gauges read from elsewhere (the database): the scrape
 * waits for it up to SCRAPE_REFRESH_WAIT_MS, then prints what its collectors set. A refresh
 * caches (see CachedRead) so several scrapes do not each pay for it. Returns the remover.
 */
export function onScrapeRefresh(broker: ServiceBroker, refresh: () => Promise<void>): () => void {
	const { refreshers } = stateOf(broker);
	refreshers.add(refresh);
	return () => refreshers.delete(refresh);
}

/** How long a scrape waits for the refreshes (a slow database must not stall the scrape). */
export const SCRAPE_REFRESH_WAIT_MS = 1000;

/** Called by the reporter before the collectors: resolves when every refresh settled, or after `waitMs`. */
export async function runScrapeRefreshes(broker: ServiceBroker, waitMs = SCRAPE_REFRESH_WAIT_MS): Promise<void> {
	const { refreshers } = stateOf(broker);
	if (refreshers.size === 0) return;
	let timer: NodeJS.Timeout | undefined;
	await Promise.race([
		Promise.allSettled(Array.from(refreshers, refresh => refresh())),
		new Promise<void>(resolve => {
			timer = setTimeout(resolve, waitMs);
		})
	]);
	clearTimeout(timer);
}

/**
 * A value read at most once per `ttlMs` (the last read's result in between), with one read in
 * flight at a time: concurrent callers share it. A failed read keeps the last value, calls
 * `onError` and is tried again at the next call.
 */
export class CachedRead<T> {
	private value: T;
	private readAt = Number.NEGATIVE_INFINITY;
	private pending?: Promise<T>;

	constructor(
		private readonly read: () => Promise<T>,
		initial: T,
		private readonly opts: { ttlMs: number; onError(err: unknown): void; now?: () => number }
	) {
		this.value = initial;
	}

	/** The last value read (the initial one before any read succeeded). */
	get current(): T {
		return this.value;
	}

	/** A fresh value: the cached one within the TTL, else the result of a (shared) read. */
	get(): Promise<T> {
		const now = this.opts.now ?? Date.now;
		if (now() - this.readAt < this.opts.ttlMs) return Promise.resolve(this.value);
		this.pending ??= this.read()
			.then(
				value => {
					this.value = value;
					this.readAt = now();
					return value;
				},
				err => {
					this.opts.onError(err);
					return this.value;
				}
			)
			.finally(() => {
				this.pending = undefined;
			});
		return this.pending;
	}
}

/**
 * A label value from a closed set: `value` when it is one of `known`, else "other" (a job kind
 * no node registered, a state that is not a job state), so no input widens a label.
 */
export function boundedLabel(known: ReadonlySet<string> | readonly string[], value: string | null | undefined): string {
	if (!value) return "other";
	const has = Array.isArray(known) ? known.includes(value) : (known as ReadonlySet<string>).has(value);
	return has ? value : "other";
}

/**
 * Observations counted locally in a histogram's buckets and added to the registry's series in one
 * step: per observation a short bucket scan, with no label hashing, no timestamp and no allocation.
 */
export class LocalHistogram {
	private readonly counts: number[];
	private sum = 0;
	private count = 0;

	/** `buckets`: the registered histogram's upper bounds, ascending. */
	constructor(private readonly buckets: readonly number[]) {
		this.counts = new Array<number>(buckets.length + 1).fill(0);
	}

	observe(value: number): void {
		const buckets = this.buckets;
		let i = 0;
		while (i < buckets.length && value > buckets[i]) i++;
		this.counts[i]++;
		this.sum += value;
		this.count++;
	}

	/** Adds what was observed since the last call to the series of `labels` in `histogram`, then starts from zero. */
	addTo(histogram: ReturnType<MetricRegistry["getMetric"]>, labels: SeriesLabels): void {
		if (this.count === 0 || !histogram || histogram.type !== "histogram") return;
		if (histogram instanceof BatchedHistogram) {
			histogram.merge(this, labels);
			return;
		}
		const moleculerHistogram = histogram as unknown as { observe(v: number, l?: SeriesLabels): HistogramItem };
		this.addThrough((value, l) => moleculerHistogram.observe(value, l), labels);
	}

	/**
	 * Adds the observations through a Moleculer histogram's `observe`: one observe creates the
	 * labelled series (the registry's public path), the counts are then added to it. Starts from zero.
	 */
	addThrough(observe: (value: number, labels?: SeriesLabels) => HistogramItem, labels?: SeriesLabels): void {
		if (this.count === 0) return;
		const item = observe(0, labels);
		item.count += this.count - 1;
		item.sum += this.sum;
		// observe(0) counted one in every bucket; the counts replace it.
		let cumulative = 0;
		for (let i = 0; i < this.buckets.length; i++) {
			cumulative += this.counts[i];
			item.bucketValues[this.buckets[i]] += cumulative - 1;
		}
		item.rate?.update(item.count);
		this.reset();
	}

	/** Adds another one's observations (same buckets) to this one, and empties it. */
	take(other: LocalHistogram): void {
		for (let i = 0; i < this.counts.length; i++) this.counts[i] += other.counts[i] ?? 0;
		this.sum += other.sum;
		this.count += other.count;
		other.reset();
	}

	private reset(): void {
		this.counts.fill(0);
		this.sum = 0;
		this.count = 0;
	}
}

interface PendingHistogram extends PendingEntry {
	local: LocalHistogram;
}

/**
 * A histogram whose observations are counted per series in a LocalHistogram and added to the
 * registry's series when it is read (`get`, `snapshot`, or `flush`, which the reporter calls before
 * every scrape). Moleculer's own observe hashes the labels, takes a timestamp and addresses each
 * bucket by a fractional property name (a number-to-string conversion each): 5 to 20 µs a call,
 * several per streamed answer. chatmesh's histograms are of this type.
 */
export class BatchedHistogram extends MetricTypes.Histogram {
	private readonly pending = new PendingSeries<PendingHistogram>(this.labelNames, labels => ({
		local: new LocalHistogram(this.buckets ?? []),
		labels,
		unwritten: false
	}));

	override observe(value: number, labels?: SeriesLabels): void {
		this.pending.touch(labels).local.observe(value);
	}

	/** Adds a LocalHistogram's observations (same buckets) to the series of `labels`, and empties it. */
	merge(local: LocalHistogram, labels?: SeriesLabels): void {
		this.pending.touch(labels).local.take(local);
	}

	override get(labels?: SeriesLabels): ReturnType<InstanceType<typeof MetricTypes.Histogram>["get"]> {
		this.flush();
		return super.get(labels);
	}

	override snapshot(): ReturnType<InstanceType<typeof MetricTypes.Histogram>["snapshot"]> {
		this.flush();
		return super.snapshot();
	}

	flush(): void {
		const observe = (value: number, labels?: SeriesLabels) => super.observe(value, labels) as unknown as HistogramItem;
		for (const entry of this.pending.drain()) entry.local.addThrough(observe, entry.labels);
	}
}
MetricTypes.register("BatchedHistogram", BatchedHistogram as unknown as Parameters<typeof MetricTypes.register>[1]);

/**
 * Inter-token gaps of one answer, counted locally (LocalHistogram) and added to
 * `chatmesh_llm_inter_token_seconds` once when the answer ends: per chunk a subtraction and a
 * short scan.
 */
export class GapRecorder {
	private readonly gaps = new LocalHistogram(GAP_BUCKETS);
	/** The previous chunk's time; negative before the first. */
	private last = -1;

	/** A chunk arrived at `now` (ms, performance.now()). */
	chunk(now: number): void {
		if (this.last >= 0) this.gaps.observe((now - this.last) / 1000);
		this.last = now;
	}

	/** Adds the gaps to `chatmesh_llm_inter_token_seconds{model}` in one step. */
	flush(broker: ServiceBroker, model: string): void {
		if (!broker.isMetricsEnabled()) return;
		this.gaps.addTo(broker.metrics.getMetric(METRICS.interTokenGap.name), { model });
	}
}

interface HistogramItem {
	count: number;
	sum: number;
	bucketValues: Record<number, number>;
	rate?: { update(value: number): void };
}

/** One chat request (a turn or a completion) reached its final status: `llm_requests_total` and `llm_latency_seconds`. */
export function recordChatRequest(broker: ServiceBroker, status: RequestStatus, model: string | null, provider: string | null, seconds: number): void {
	if (!broker.isMetricsEnabled()) return;
	const labels = { model: modelLabel(broker, model), provider: provider ?? "none" };
	increment(broker, "llmRequests", { ...labels, status });
	observe(broker, "llmLatency", seconds, labels);
}
