/**
 * Broker options for a chatmesh node, derived from the validated configuration. Fault tolerance
 * defaults live here; actions override them where it matters (the llm bulkhead, idempotent
 * retries).
 */
import type { BrokerOptions, MetricRegistry, Middleware } from "moleculer";
import type { ChatmeshConfig } from "./lib/config";
import { AuthMiddleware } from "./middlewares/auth.middleware";
import { ChatmeshRegenerator } from "./lib/errors";
import { isNodeLoss } from "./lib/node-loss";
import { INTERNAL_MIDDLEWARES, BatchedMetrics } from "./middlewares/metrics.middleware";
import { ResilientRedisCacher } from "./lib/cacher";
import { redisOptions } from "./lib/redis";
import { loggerOptions } from "./lib/logger";
import { tracingOptions } from "./lib/tracing";
import { RequestContextMiddleware } from "./middlewares/request-context.middleware";
import { ChatmeshPrometheusReporter, LEAKY_METRICS } from "./lib/metrics-reporter";
import { jobsChannelMiddleware } from "./services/jobs/channel";

export function brokerOptions(config: ChatmeshConfig): BrokerOptions {
	const clustered = config.transporter.length > 0;
	return {
		namespace: config.namespace,
		nodeID: config.nodeID,
		transporter: clustered
			? {
					type: "NATS",
					options: { servers: config.transporter, maxReconnectAttempts: -1, reconnectTimeWait: 1000 }
				}
			: undefined,
		cacher: config.redisUrl
			? new ResilientRedisCacher({ prefix: `${config.namespace}-cache`, ttl: 300, redis: redisOptions(config.redisUrl) })
			: { type: "Memory", options: { ttl: 300, maxParamsLength: 100 } },
		serializer: "JSON",
		logger: loggerOptions(config),
		errorRegenerator: new ChatmeshRegenerator(),
		requestTimeout: config.requestTimeoutMs,
		// A call whose node died or was stopping before it answered goes to a live node (see
		// lib/node-loss.ts); no other failure is retried. Callers whose action is not safe to repeat
		// pass `retries: 0` and make it safe themselves (conversation.send, llm.stream: their clients).
		retryPolicy: { enabled: true, retries: 2, delay: 250, maxDelay: 1000, factor: 2, check: isNodeLoss },
		circuitBreaker: {
			enabled: true,
			threshold: 0.5,
			windowTime: 60,
			minRequestCount: 20,
			halfOpenTime: 10_000,
			// Only failures of the callee count, never the caller's bad input.
			check: (err: Error) => {
				const code = (err as Error & { code?: number }).code;
				return typeof code === "number" && code >= 500;
			}
		},
		bulkhead: { enabled: true, concurrency: 100, maxQueueSize: 1000 },
		// Short heartbeats so a killed node leaves the registry within seconds.
		heartbeatInterval: config.heartbeatIntervalS,
		heartbeatTimeout: config.heartbeatTimeoutS,
		registry: { strategy: "RoundRobin", preferLocal: true },
		tracking: { enabled: true, shutdownTimeout: config.shutdownGraceMs },
		// SIGTERM is handled by the node (server.ts), which closes the database after the broker.
		skipProcessEventRegistration: true,
		// Moleculer's internal middlewares in their order, with the hot-path metrics batched (see middlewares/metrics.middleware.ts).
		internalMiddlewares: false,
		middlewares: [
			AuthMiddleware(),
			...INTERNAL_MIDDLEWARES.map(name => (name === "Metrics" ? (BatchedMetrics() as unknown as Middleware) : name)),
			// The jobs.work channel, on nodes that run jobs workers.
			...(config.services.includes("jobs") ? [jobsChannelMiddleware(config)] : []),
			// Outermost: what a handler logs or starts carries its request (read by JSON lines and traces only).
			...(config.logFormat === "json" || config.tracing ? [RequestContextMiddleware()] : [])
		],
		metrics:
			config.metricsPort === undefined
				? { enabled: false }
				: {
						enabled: true,
						// Per-node CPU and memory for the dashboard, also under NODE_ENV=test (where Moleculer turns them off).
						collectProcessMetrics: true,
						// Moleculer takes a reporter instance too; its typings list only the named reporters.
						reporter: [
							new ChatmeshPrometheusReporter({
								host: config.metricsHost,
								port: config.metricsPort,
								path: "/metrics",
								excludes: LEAKY_METRICS,
								defaultLabels: (registry: { broker: { namespace: string; nodeID: string } }) => ({
									namespace: registry.broker.namespace,
									nodeID: registry.broker.nodeID
								})
							}) as unknown as MetricRegistry.MetricsReporter
						]
					},
		tracing: tracingOptions(config.tracing)
	};
}
