/**
 * Moleculer's metrics middleware with its per-packet counters taken off the hot path. The
 * built-in one increments two to four labelled metrics for every packet a node publishes, receives,
 * sends or reads, and a streamed answer is a packet per token on every hop: measured, that was a
 * fifth to a quarter of a node's CPU per stream (BENCHMARKS.md). Here the same series
 * (`moleculer_transit_*`, `moleculer_transporter_*`) are counted in plain numbers and written to the
 * registry once per `flushMs`; the action, event and broker metrics are the built-in ones, unchanged.
 *
 * It also registers chatmesh's own metrics (lib/metrics.ts) on every node.
 *
 * Registered in place of the built-in "Metrics" in the broker's internal middleware list
 * (moleculer.config.ts), so the order of the others stays Moleculer's.
 */
import moleculer, { METRIC, type Middleware, type ServiceBroker } from "moleculer";
import { generationLogStats } from "../lib/generations/stats";
import { onScrape, registerChatmeshMetrics, setGauge, setTotal } from "../lib/metrics";
import { hasRuntime, runtimeOf } from "../lib/runtime";

type MiddlewareFactory = (broker: ServiceBroker) => Middleware & Record<string, unknown>;
type Wrapper = (next: (...args: unknown[]) => unknown) => (...args: unknown[]) => unknown;

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

interface Transit {
	pendingRequests: Map<string, unknown>;
	pendingReqStreams: Map<string, unknown>;
	pendingResStreams: Map<string, unknown>;
}

class PacketCounts {
	published = new Map<string, number>();
	received = new Map<string, number>();
	sentPackets = 0;
	sentBytes = 0;
	receivedPackets = 0;
	receivedBytes = 0;
}

const bump = (counts: Map<string, number>, key: string) => counts.set(key, (counts.get(key) ?? 0) + 1);

/**
 * The middleware factory (Moleculer calls it with the broker). With metrics off it is the built-in
 * one, which then wraps nothing.
 */
export function PacketBatchedMetrics(flushMs = 1000): (broker: ServiceBroker) => Middleware {
	return broker => {
		const builtIn = builtInMetrics(broker);
		if (!broker.isMetricsEnabled()) return builtIn;
		// chatmesh's own metrics (lib/metrics.ts) exist from the broker's start, on every node.
		registerChatmeshMetrics(broker);
		const metrics = broker.metrics;
		let counts = new PacketCounts();
		let timer: NodeJS.Timeout | undefined;
		const flush = () => {
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
			async started() {
				timer = setInterval(flush, flushMs).unref();
				stopCollecting = onScrape(broker, () => collectNodeState(broker));
			},
			async stopped() {
				clearInterval(timer);
				stopCollecting();
				flush();
			}
		};
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
