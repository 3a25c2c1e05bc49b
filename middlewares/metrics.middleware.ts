/**
 * Moleculer's metrics middleware with its hot-path counting taken out of the registry. The
 * built-in one writes labelled metrics through the registry (label hashing, a timestamp, change
 * notices) on every call, event and packet: four to six writes per action call, and a packet per
 * token on every hop of a streamed answer. Here the same series are counted in plain numbers
 * beside each action, event handler and packet type, and written to the registry once per
 * `flushMs` and before every scrape:
 * - `moleculer_request_*` (total, active, levels, time) and `moleculer_event_received_*`;
 * - `moleculer_transit_*` and `moleculer_transporter_*`;
 * - the bulkhead's in-flight and queue gauges (set on every call by Moleculer's Bulkhead
 *   middleware): registered as a BatchedGauge, which keeps the last value until the flush.
 * Errors are written at once (they are rare, and their labels come from the error). The time
 * histograms (calls, events, the cacher's) keep Moleculer's buckets but not its quantile windows,
 * which the Prometheus output never prints (lib/metrics-reporter.ts). Emitted and broadcast events
 * are the built-in counters.
 *
 * It also registers chatmesh's own metrics (lib/metrics.ts) on every node. The wrappers follow the
 * registry's switch (`metrics.opts.enabled`, which every registry write reads) on each call, so a
 * registry switched off at run time (the bench's one-process measurement) counts nothing here either.
 *
 * Registered in place of the built-in "Metrics" in the broker's internal middleware list
 * (moleculer.config.ts), so the order of the others stays Moleculer's.
 */
import moleculer, { type Context, METRIC, type Middleware, type ServiceBroker } from "moleculer";
import { generationLogStats } from "../lib/generations/stats";
import { BatchedGauge, LocalHistogram, onScrape, registerChatmeshMetrics, type SeriesLabels, setGauge, setTotal } from "../lib/metrics";
import { hasRuntime, runtimeOf } from "../lib/runtime";

type MiddlewareFactory = (broker: ServiceBroker) => Middleware & Record<string, unknown>;
type Wrapper = (next: (...args: unknown[]) => unknown) => (...args: unknown[]) => unknown;
type Handler = (ctx: Context) => Promise<unknown>;

/** The internal middlewares a broker registers by default, in Moleculer 0.15's order. */
export const INTERNAL_MIDDLEWARES = [
	"ActionHook",
	"Validator",
	"Bulkhead",
	"Cacher",
	"ContextTracker",
	"CircuitBreaker",
	"Timeout",
	"Retry",
	"Fallback",
	"ErrorHandler",
	"Tracing",
	"Metrics",
	"Debounce",
	"Throttle"
] as const;

const builtInMetrics = (moleculer as unknown as { Middlewares: Record<string, MiddlewareFactory> }).Middlewares.Metrics;

/** The gauges Moleculer's Bulkhead middleware sets on every call, batched here. */
const BULKHEAD_GAUGES = [
	METRIC.MOLECULER_REQUEST_BULKHEAD_INFLIGHT,
	METRIC.MOLECULER_REQUEST_BULKHEAD_QUEUE_SIZE,
	METRIC.MOLECULER_EVENT_BULKHEAD_INFLIGHT,
	METRIC.MOLECULER_EVENT_BULKHEAD_QUEUE_SIZE
];

/** The calls of one action (or deliveries of one event) from one caller since the last flush. */
class CallSeries {
	calls = 0;
	active = 0;
	/** The active count last written to the registry. */
	written = 0;
	readonly time: LocalHistogram;

	constructor(
		readonly labels: SeriesLabels,
		buckets: readonly number[]
	) {
		this.time = new LocalHistogram(buckets);
	}
}

/** One kind of call series (requests, received events): the registry's metric names and every series. */
class CallMetrics {
	readonly series: CallSeries[] = [];

	constructor(
		private readonly broker: ServiceBroker,
		readonly names: { total: string; active: string; time: string; errors: string }
	) {}

	/** A series for these labels, kept for the flush; its histogram has the registered buckets. */
	create(labels: SeriesLabels): CallSeries {
		const histogram = this.broker.metrics.getMetric(this.names.time) as { buckets?: number[] } | null;
		const series = new CallSeries(labels, histogram?.buckets ?? []);
		this.series.push(series);
		return series;
	}

	/** Times `call` into `series`; a failure is counted at once, with the error's labels. */
	track(series: CallSeries, call: () => Promise<unknown>): Promise<unknown> {
		series.calls++;
		series.active++;
		const started = performance.now();
		return call().then(
			result => {
				series.active--;
				series.time.observe(performance.now() - started);
				return result;
			},
			(err: (Error & { code?: unknown; type?: unknown }) | undefined) => {
				series.active--;
				series.time.observe(performance.now() - started);
				this.broker.metrics.increment(this.names.errors, {
					...series.labels,
					errorName: err ? err.name : null,
					errorCode: err ? err.code : null,
					errorType: err ? err.type : null
				});
				throw err;
			}
		);
	}

	flush(): void {
		const metrics = this.broker.metrics;
		const histogram = metrics.getMetric(this.names.time);
		for (const series of this.series) {
			if (series.calls > 0) metrics.increment(this.names.total, series.labels, series.calls);
			if (series.active !== series.written || series.calls > 0) metrics.set(this.names.active, series.active, series.labels);
			series.written = series.active;
			series.calls = 0;
			series.time.addTo(histogram, series.labels);
		}
	}
}

class PacketCounts {
	published = new Map<string, number>();
	received = new Map<string, number>();
	sentPackets = 0;
	sentBytes = 0;
	receivedPackets = 0;
	receivedBytes = 0;
}

interface Transit {
	pendingRequests: Map<string, unknown>;
	pendingReqStreams: Map<string, unknown>;
	pendingResStreams: Map<string, unknown>;
}

interface ActionDefinition {
	name: string;
	service?: { fullName: string };
}

interface EventDefinition {
	group?: string;
	service?: { name: string };
}

const bump = <K>(counts: Map<K, number>, key: K) => counts.set(key, (counts.get(key) ?? 0) + 1);

/**
 * Re-registers Moleculer's time histograms with their buckets but without quantile windows and
 * rates. A quantile window keeps every observation of the last minute (the cacher's: one per cache
 * read) and sorts them all on each snapshot, that is on every scrape; the Prometheus output never
 * prints quantiles (lib/metrics-reporter.ts), and Prometheus computes rates itself.
 */
function registerTimeHistograms(broker: ServiceBroker): void {
	const histograms = [
		{ name: METRIC.MOLECULER_REQUEST_TIME, labelNames: ["service", "action", "type", "caller"], buckets: true },
		{ name: METRIC.MOLECULER_EVENT_RECEIVED_TIME, labelNames: ["service", "group", "event", "caller"], buckets: true },
		// The cacher's (registered by the cacher before any middleware's `created`, only when there is one): no buckets, as Moleculer has them.
		...[METRIC.MOLECULER_CACHER_GET_TIME, METRIC.MOLECULER_CACHER_SET_TIME, METRIC.MOLECULER_CACHER_DEL_TIME, METRIC.MOLECULER_CACHER_CLEAN_TIME]
			.filter(name => broker.metrics.hasMetric(name))
			.map(name => ({ name, labelNames: [] as string[], buckets: false }))
	];
	for (const { name, labelNames, buckets } of histograms) {
		const registered = broker.metrics.getMetric(name);
		broker.metrics.register({
			name,
			type: METRIC.TYPE_HISTOGRAM,
			labelNames,
			...(buckets ? { buckets: true } : {}),
			quantiles: false,
			rate: false,
			unit: METRIC.UNIT_MILLISECONDS,
			description: registered?.description
		} as unknown as Parameters<ServiceBroker["metrics"]["register"]>[0]);
	}
}

/** The bulkhead's gauges, registered again as BatchedGauge (same names, labels and help). */
function registerBulkheadGauges(broker: ServiceBroker): BatchedGauge[] {
	const gauges: BatchedGauge[] = [];
	for (const name of BULKHEAD_GAUGES) {
		const registered = broker.metrics.getMetric(name);
		if (!registered) continue;
		const gauge = broker.metrics.register({
			name,
			type: "BatchedGauge",
			labelNames: registered.labelNames,
			description: registered.description,
			unit: registered.unit
		} as unknown as Parameters<ServiceBroker["metrics"]["register"]>[0]);
		if (gauge instanceof BatchedGauge) gauges.push(gauge);
	}
	return gauges;
}

/**
 * The middleware factory (Moleculer calls it with the broker). With metrics off it is the built-in
 * one, which then wraps nothing.
 */
export function BatchedMetrics(flushMs = 1000): (broker: ServiceBroker) => Middleware {
	return broker => {
		const builtIn = builtInMetrics(broker);
		if (!broker.isMetricsEnabled()) return builtIn;
		// chatmesh's own metrics (lib/metrics.ts) exist from the broker's start, on every node.
		registerChatmeshMetrics(broker);
		const metrics = broker.metrics;
		const requests = new CallMetrics(broker, {
			total: METRIC.MOLECULER_REQUEST_TOTAL,
			active: METRIC.MOLECULER_REQUEST_ACTIVE,
			time: METRIC.MOLECULER_REQUEST_TIME,
			errors: METRIC.MOLECULER_REQUEST_ERROR_TOTAL
		});
		const events = new CallMetrics(broker, {
			total: METRIC.MOLECULER_EVENT_RECEIVED_TOTAL,
			active: METRIC.MOLECULER_EVENT_RECEIVED_ACTIVE,
			time: METRIC.MOLECULER_EVENT_RECEIVED_TIME,
			errors: METRIC.MOLECULER_EVENT_RECEIVED_ERROR_TOTAL
		});
		let levels = new Map<number, number>();
		let bulkheadGauges: BatchedGauge[] = [];
		let counts = new PacketCounts();
		let timer: NodeJS.Timeout | undefined;

		const flush = () => {
			requests.flush();
			events.flush();
			for (const [level, n] of levels) metrics.increment(METRIC.MOLECULER_REQUEST_LEVELS, { level }, n);
			levels = new Map();
			for (const gauge of bulkheadGauges) gauge.flush();
			const { published, received, sentPackets, sentBytes, receivedPackets, receivedBytes } = counts;
			counts = new PacketCounts();
			for (const [type, n] of published) metrics.increment(METRIC.MOLECULER_TRANSIT_PUBLISH_TOTAL, { type }, n);
			for (const [type, n] of received) metrics.increment(METRIC.MOLECULER_TRANSIT_RECEIVE_TOTAL, { type }, n);
			if (sentPackets) {
				metrics.increment(METRIC.MOLECULER_TRANSPORTER_PACKETS_SENT_TOTAL, undefined, sentPackets);
				metrics.increment(METRIC.MOLECULER_TRANSPORTER_PACKETS_SENT_BYTES, undefined, sentBytes);
			}
			if (receivedPackets) {
				metrics.increment(METRIC.MOLECULER_TRANSPORTER_PACKETS_RECEIVED_TOTAL, undefined, receivedPackets);
				metrics.increment(METRIC.MOLECULER_TRANSPORTER_PACKETS_RECEIVED_BYTES, undefined, receivedBytes);
			}
			const transit = (broker as ServiceBroker & { transit?: Transit }).transit;
			if (transit) {
				metrics.set(METRIC.MOLECULER_TRANSIT_REQUESTS_ACTIVE, transit.pendingRequests.size);
				metrics.set(METRIC.MOLECULER_TRANSIT_STREAMS_SEND_ACTIVE, transit.pendingReqStreams.size + transit.pendingResStreams.size);
			}
		};

		const wrapAction = (type: "local" | "remote") => (next: Handler, action: ActionDefinition) => {
			const base = { service: action.service?.fullName ?? null, action: action.name, type };
			const byCaller = new Map<string | null, CallSeries>();
			return function batchedActionMetrics(ctx: Context) {
				if (!metrics.isEnabled()) return next(ctx);
				const caller = ctx.caller ?? null;
				let series = byCaller.get(caller);
				if (!series) {
					series = requests.create({ ...base, caller });
					byCaller.set(caller, series);
				}
				bump(levels, ctx.level);
				return requests.track(series, () => next(ctx));
			};
		};

		const hooks: Record<string, Wrapper> = {
			transitPublish:
				next =>
				(...args) => {
					bump(counts.published, (args[0] as { type: string }).type);
					return next(...args);
				},
			transitMessageHandler:
				next =>
				(...args) => {
					bump(counts.received, args[0] as string);
					return next(...args);
				},
			transporterSend:
				next =>
				(...args) => {
					counts.sentPackets++;
					counts.sentBytes += (args[1] as Buffer | undefined)?.length ?? 0;
					return next(...args);
				},
			transporterReceive:
				next =>
				(...args) => {
					counts.receivedPackets++;
					counts.receivedBytes += (args[1] as Buffer | undefined)?.length ?? 0;
					return next(...args);
				}
		};
		let stopCollecting = () => {};
		return {
			...builtIn,
			...(hooks as Middleware),
			created() {
				// The built-in registers every Moleculer metric; the hot ones are then replaced.
				(builtIn.created as (b: ServiceBroker) => void).call(builtIn, broker);
				registerTimeHistograms(broker);
				bulkheadGauges = registerBulkheadGauges(broker);
			},
			localAction: wrapAction("local"),
			remoteAction: wrapAction("remote"),
			localEvent(next: Handler, event: EventDefinition) {
				const service = event.service ? event.service.name : null;
				const group = event.group || service;
				const byName = new Map<string, Map<string | null, CallSeries>>();
				return function batchedEventMetrics(this: unknown, ctx: Context) {
					if (!metrics.isEnabled()) return next.call(this, ctx);
					const caller = ctx.caller ?? null;
					const eventName = ctx.eventName ?? "";
					let byCaller = byName.get(eventName);
					if (!byCaller) {
						byCaller = new Map();
						byName.set(eventName, byCaller);
					}
					let series = byCaller.get(caller);
					if (!series) {
						series = events.create({ service, group, event: eventName, caller });
						byCaller.set(caller, series);
					}
					return events.track(series, () => next.call(this, ctx));
				};
			},
			async started() {
				timer = setInterval(flush, flushMs).unref();
				// A scrape sees what was counted up to it, then the node's shared parts.
				const stopFlushing = onScrape(broker, flush);
				const stopNodeState = onScrape(broker, () => collectNodeState(broker));
				stopCollecting = () => {
					stopFlushing();
					stopNodeState();
				};
			},
			async stopped() {
				clearInterval(timer);
				stopCollecting();
				flush();
			}
		} as Middleware;
	};
}

/** The node's shared parts, read at scrape time: the replay log's traffic and the database pool. */
function collectNodeState(broker: ServiceBroker): void {
	const { appended, stored, delivered } = generationLogStats;
	setTotal(broker, "logEventsWritten", stored);
	setTotal(broker, "logEventsDelivered", delivered);
	setGauge(broker, "logWriteBacklog", appended - stored);
	const database = hasRuntime(broker) ? runtimeOf(broker).database : undefined;
	if (database) {
		const { total, idle, waiting } = database.poolStats;
		setGauge(broker, "dbPoolWaiting", waiting);
		setGauge(broker, "dbPoolConnections", idle, { state: "idle" });
		setGauge(broker, "dbPoolConnections", total - idle, { state: "busy" });
	}
}
