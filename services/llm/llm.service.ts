/**
 * llm: the model providers behind chatmesh. Each provider is any OpenAI-compatible endpoint,
 * reached with the official SDK; with none configured the node runs the built-in simulator.
 *
 * Generations: `stream` answers with an NDJSON byte stream of `LlmStreamLine`s (start, delta*,
 * tool_calls?, end | error), `chat` with the whole answer. Both go through the providers serving
 * the model in configured order (fallback before the first token, a breaker per provider), under
 * a first-token and an idle timeout, and are stopped from any node by the broadcast
 * `generation.cancel`. Requests naming no model are routed by complexity (see ./router.ts).
 * The error rule is in ./generation.ts; the mapping of provider failures in ./upstream-errors.ts.
 */
import { randomUUID } from "node:crypto";
import type { Readable } from "node:stream";
import type { ActionSchema, Context, ServiceSchema } from "moleculer";
import type { ModelTiers } from "../../lib/config";
import { BadRequestError, ConflictError, ERR_MODEL_NOT_FOUND, ERR_UNAVAILABLE, ERR_UPSTREAM_TIMEOUT, UnavailableError, UpstreamError } from "../../lib/errors";
import { NODE_STOPPING } from "../../lib/node-loss";
import { runtimeOf } from "../../lib/runtime";
import { increment, modelLabel, observe, onScrape, setGauge } from "../../lib/metrics";
import { BREAKER_STATES, CircuitBreaker, type BreakerSettings } from "./breaker";
import { CANCEL_EVENT } from "./client";
import { ConcurrencyGate } from "./gate";
import { Generation, type GenerationObserver, type GenerationResult } from "./generation";
import { LineStream } from "./ndjson";
import {
	cancelRules,
	chatRules,
	routeRules,
	streamRules,
	type CancelParams,
	type ChatParams,
	type ChatResult,
	type GenerateParams,
	type RouteParams,
	type StreamParams
} from "./params";
import { createProviders, type Provider } from "./providers";
import { defaultTiers, routeMessages, type RouteDecision } from "./router";

export type { CancelParams, ChatParams, ChatResult, RouteParams, StreamParams } from "./params";
export type { RouteDecision as RouteResult } from "./router";

export interface ProviderHealth {
	name: string;
	ok: boolean;
	/** Models the endpoint listed, when it answered. */
	models: string[];
	error?: string;
	durationMs: number;
}

export interface ModelInfo {
	id: string;
	provider: string;
}

export interface LlmSettings {
	/** Bound on one provider's /v1/models answer during health checks. */
	healthTimeoutMs: number;
	/** A provider sending no first token for this long is timed out (LLM_FIRST_TOKEN_TIMEOUT_MS). */
	firstTokenTimeoutMs: number;
	/** A stream silent for this long between chunks is timed out (LLM_IDLE_TIMEOUT_MS). */
	idleTimeoutMs: number;
	/** The router's models (MODEL_TIERS, else the first, middle and last model served). */
	tiers: ModelTiers;
	/** The GPU pool: generations running at once on this node (the bulkhead of stream and chat, and the gate). */
	concurrency: number;
	/** Requests waiting in each action's bulkhead queue before QUEUE_FULL. */
	maxQueueSize: number;
	breaker: BreakerSettings;
	/** On stop, how long running generations may go on before they are ended (SHUTDOWN_GRACE_MS). */
	drainTimeoutMs: number;
	/** How long a cancel for a generation not (yet) running here is remembered. */
	cancelMemoryMs: number;
}

interface Running {
	generation: Generation;
	/** The node that called: when it leaves the cluster, no one reads the answer any more. */
	callerNodeID: string;
	stream?: LineStream;
	finished: Promise<GenerationResult>;
}

interface LlmVars {
	providers: Provider[];
	breakers: Map<string, CircuitBreaker>;
	gate: ConcurrencyGate;
	running: Map<string, Running>;
	/** Cancels that arrived before their generation: id → expiry (ms since the epoch). */
	earlyCancels: Map<string, number>;
	stopping: boolean;
	/** Removes this service's scrape collector. */
	stopMetrics?: () => void;
}

interface LlmMethods {
	prepare(params: GenerateParams & { generationId: string }): Generation;
	resolveModel(params: GenerateParams): { model: string; providers: Provider[] };
	track(generation: Generation, callerNodeID: string, run: Promise<GenerationResult>, stream?: LineStream): Promise<GenerationResult>;
	callerDeadline(ctx: Context, generation: Generation): () => void;
	uncommittedFailure(result: GenerationResult): Error | undefined;
	endStream(stream: LineStream, result: GenerationResult): void;
	rememberCancel(generationId: string): void;
	observer(model: string): GenerationObserver | undefined;
}

const LlmService: ServiceSchema<LlmSettings, LlmMethods, LlmVars> = {
	name: "llm",

	settings: {
		healthTimeoutMs: 2000,
		// Filled from the configuration in merged():
		firstTokenTimeoutMs: 60_000,
		idleTimeoutMs: 30_000,
		tiers: { cheap: "", medium: "", strong: "" },
		drainTimeoutMs: 10_000,
		concurrency: 64,
		maxQueueSize: 1000,
		breaker: { failureThreshold: 5, openMs: 30_000 },
		cancelMemoryMs: 60_000
	},

	actions: {
		/** Asks every provider's /v1/models, in parallel. */
		health: {
			params: {},
			async handler(): Promise<ProviderHealth[]> {
				return Promise.all(
					this.providers.map(async ({ config, client }) => {
						const start = performance.now();
						try {
							const page = await client.models.list({ timeout: this.settings.healthTimeoutMs });
							return { name: config.name, ok: true, models: page.data.map(m => m.id), durationMs: Math.round(performance.now() - start) };
						} catch (err) {
							return {
								name: config.name,
								ok: false,
								models: [],
								error: (err as Error).message,
								durationMs: Math.round(performance.now() - start)
							};
						}
					})
				);
			}
		},

		/** The models chatmesh offers: every configured model of every provider, in order. */
		models: {
			params: {},
			cache: { ttl: 30 },
			handler(): ModelInfo[] {
				const seen = new Set<string>();
				const models: ModelInfo[] = [];
				for (const { config } of this.providers)
					for (const id of config.models)
						if (!seen.has(id)) {
							seen.add(id);
							models.push({ id, provider: config.name });
						}
				return models;
			}
		},

		/** The model the router picks for these messages, its tier, and why. */
		route: {
			params: routeRules,
			handler(ctx: Context<RouteParams>): RouteDecision {
				return routeMessages(ctx.params.messages, this.settings.tiers);
			}
		},

		/**
		 * Streams a generation as NDJSON `LlmStreamLine`s. Resolves at the first token (after any
		 * fallback), so failures before it are thrown; failures after it end the stream with an
		 * `error` line. The bulkhead and timeout are set in merged().
		 */
		stream: {
			params: streamRules,
			async handler(ctx: Context<StreamParams>): Promise<Readable> {
				const generation = this.prepare(ctx.params);
				const stream = new LineStream(() => generation.stop("consumer-gone"));
				let firstToken!: () => void;
				const started = new Promise<undefined>(resolve => (firstToken = () => resolve(undefined)));
				const sendStart = (provider: string, model: string) =>
					stream.send({ type: "start", generationId: generation.id, model, provider, nodeID: this.broker.nodeID });
				const run = generation.run({
					start: (provider, model) => {
						sendStart(provider, model);
						firstToken();
					},
					delta: content => stream.send({ type: "delta", content })
				});
				const finished = this.track(generation, ctx.nodeID ?? this.broker.nodeID, run, stream);
				const clearDeadline = this.callerDeadline(ctx, generation);
				const early = await Promise.race([started, finished]).finally(clearDeadline);
				if (early && !early.committed) {
					const failure = this.uncommittedFailure(early);
					if (failure) throw failure;
					sendStart(early.provider, early.model); // cancelled before its first token: an empty answer
				}
				void finished.then(result => this.endStream(stream, result));
				// Moleculer sends the callee's ctx.meta with every packet of a response stream (the
				// caller's user and response headers, with each token) and merges it into the caller's
				// meta each time; a stream has nothing to hand back in meta.
				ctx.meta = {};
				return stream;
			}
		},

		/** The whole answer at once; every failure is thrown, a cancel returns what was produced. */
		chat: {
			params: chatRules,
			async handler(ctx: Context<ChatParams>): Promise<ChatResult> {
				const generation = this.prepare({ ...ctx.params, generationId: ctx.params.generationId ?? randomUUID() });
				const clearDeadline = this.callerDeadline(ctx, generation);
				const run = generation.run({ start: () => {}, delta: () => {} });
				const result = await this.track(generation, ctx.nodeID ?? this.broker.nodeID, run).finally(clearDeadline);
				const failure = result.outcome === "failed" ? result.error : this.uncommittedFailure(result);
				if (failure) throw failure;
				const { content, toolCalls, finishReason, usage, usageSource, model, provider } = result;
				return { generationId: generation.id, content, toolCalls, finishReason, usage, usageSource, model, provider };
			}
		},

		/** Stops a generation on whichever node produces it (for operators at the REPL). */
		cancel: {
			params: cancelRules,
			async handler(ctx: Context<CancelParams>): Promise<{ generationId: string }> {
				await ctx.broadcast(CANCEL_EVENT, { generationId: ctx.params.generationId });
				return { generationId: ctx.params.generationId };
			}
		}
	},

	events: {
		/** Broadcast to every node; only the one producing the generation acts. */
		[CANCEL_EVENT]: {
			params: cancelRules,
			handler(ctx: Context<CancelParams>) {
				const running = this.running.get(ctx.params.generationId);
				if (running) running.generation.stop("cancelled");
				else this.rememberCancel(ctx.params.generationId);
			}
		},

		/** A caller node that left reads nothing any more: stop what it asked for. */
		"$node.disconnected": {
			handler(ctx: Context<{ node: { id: string } }>) {
				for (const { generation, callerNodeID } of this.running.values()) if (callerNodeID === ctx.params.node.id) generation.stop("consumer-gone");
			}
		}
	},

	methods: {
		/** A generation for these params, before it runs: model resolved, checks done. */
		prepare(params: GenerateParams & { generationId: string }): Generation {
			if (this.stopping) throw new UnavailableError("The llm service is stopping", { nodeID: this.broker.nodeID, reason: NODE_STOPPING });
			if (this.running.has(params.generationId)) throw new ConflictError("This generation is already running", { generationId: params.generationId });
			const { model, providers } = this.resolveModel(params);
			const generation = new Generation(
				{ ...params, model },
				{
					providers,
					breakerOf: name => this.breakers.get(name) as CircuitBreaker,
					gate: this.gate,
					firstTokenTimeoutMs: this.settings.firstTokenTimeoutMs,
					idleTimeoutMs: this.settings.idleTimeoutMs,
					logger: this.logger,
					observer: this.observer(model)
				}
			);
			if (this.earlyCancels.delete(params.generationId)) generation.stop("cancelled");
			return generation;
		},

		/** The model asked for, or the router's pick; and the providers serving it, in order. */
		resolveModel(params: GenerateParams): { model: string; providers: Provider[] } {
			let model = params.model;
			if (model === undefined) {
				const route = routeMessages(params.messages, this.settings.tiers);
				this.logger.debug(`Routed to ${route.model} (${route.tier}; ${route.reason})`);
				model = route.model;
			}
			const providers = this.providers.filter(p => p.config.models.includes(model));
			if (providers.length === 0) throw new BadRequestError(`Model "${model}" is not available`, { model }, ERR_MODEL_NOT_FOUND);
			return { model, providers };
		},

		/** Keeps the generation in the running map until it ends. */
		track(generation: Generation, callerNodeID: string, run: Promise<GenerationResult>, stream?: LineStream) {
			const entry: Running = { generation, callerNodeID, stream, finished: run };
			this.running.set(generation.id, entry);
			return run.finally(() => {
				if (this.running.get(generation.id) === entry) this.running.delete(generation.id);
			});
		},

		/**
		 * The caller stops waiting when its call times out, but the handler would go on: stop the
		 * generation then. Returns the function that disarms the timer.
		 */
		callerDeadline(ctx: Context, generation: Generation) {
			const timeout = ctx.options?.timeout ?? 0;
			if (!(timeout > 0)) return () => {};
			const elapsed = ctx.startHrTime ? process.hrtime(ctx.startHrTime) : [0, 0];
			const remaining = timeout - (elapsed[0] * 1000 + elapsed[1] / 1e6);
			const timer = setTimeout(() => generation.stop("deadline"), Math.max(0, remaining));
			return () => clearTimeout(timer);
		},

		/** The error a generation that ended before its first token is thrown as, if any. */
		uncommittedFailure(result: GenerationResult): Error | undefined {
			if (result.committed) return undefined;
			if (result.outcome === "failed") return result.error;
			if (result.stop === "shutdown") return new UnavailableError("The llm service is stopping", { nodeID: this.broker.nodeID, reason: NODE_STOPPING });
			if (result.stop === "deadline") return new UpstreamError("No first token before the call timed out", ERR_UPSTREAM_TIMEOUT, { model: result.model });
			return undefined;
		},

		/** The stream's last lines: tool calls and end, or the error. */
		endStream(stream: LineStream, result: GenerationResult) {
			const { usage, usageSource } = result;
			if (result.outcome === "finished") {
				if (result.toolCalls.length > 0) stream.send({ type: "tool_calls", toolCalls: result.toolCalls });
				stream.send({ type: "end", finishReason: result.finishReason, usage, usageSource });
			} else if (result.outcome === "stopped" && result.stop !== "shutdown") {
				stream.send({ type: "end", finishReason: "cancelled", usage, usageSource });
			} else if (result.outcome === "stopped") {
				stream.send({ type: "error", code: ERR_UNAVAILABLE, message: "The llm node stopped before the answer was complete", usage });
			} else {
				const error = result.error as UpstreamError;
				stream.send({ type: "error", code: error.type, message: error.message, usage });
			}
			stream.finish();
		},

		/** A generation's measurements into the node's metrics (lib/metrics.ts); none with metrics off. */
		observer(model: string): GenerationObserver | undefined {
			const broker = this.broker;
			if (!broker.isMetricsEnabled()) return undefined;
			const labels = { model: modelLabel(broker, model) };
			return {
				firstToken: seconds => observe(broker, "timeToFirstToken", seconds, labels),
				providerError: (provider, kind) => increment(broker, "providerErrors", { provider, kind }),
				finished: (result, gaps) => {
					increment(broker, "promptTokens", labels, result.usage.promptTokens);
					increment(broker, "completionTokens", labels, result.usage.completionTokens);
					gaps.flush(broker, labels.model);
				}
			};
		},

		rememberCancel(generationId: string) {
			const now = Date.now();
			for (const [id, expiry] of this.earlyCancels) {
				if (expiry > now) break; // insertion order is expiry order
				this.earlyCancels.delete(id);
			}
			this.earlyCancels.set(generationId, now + this.settings.cancelMemoryMs);
		}
	},

	/**
	 * Settings from the configuration, and the bulkhead and call timeout of the generating
	 * actions from the settings. The schema object is shared by every broker of the process, so
	 * parts are replaced, never changed in place.
	 */
	merged(schema) {
		const { config, providers } = runtimeOf(this.broker);
		const settings: LlmSettings = {
			...(schema.settings as LlmSettings),
			firstTokenTimeoutMs: config.llmFirstTokenTimeoutMs,
			idleTimeoutMs: config.llmIdleTimeoutMs,
			tiers: config.modelTiers ?? defaultTiers(providers),
			drainTimeoutMs: config.shutdownGraceMs,
			concurrency: config.llmConcurrency
		};
		schema.settings = settings;
		const bulkhead = { enabled: true, concurrency: settings.concurrency, maxQueueSize: settings.maxQueueSize };
		// Moleculer honours an action's `timeout` (its typings omit it) as the callers' default.
		type TimedAction = ActionSchema & { timeout?: number };
		const actions = schema.actions as Record<string, TimedAction>;
		const generating: Record<string, TimedAction> = {
			// Callers wait for the first token: at worst every provider's first-token timeout, plus queueing.
			stream: { ...actions.stream, bulkhead, timeout: settings.firstTokenTimeoutMs * providers.length + config.requestTimeoutMs },
			// A whole answer takes as long as it takes; the first-token and idle timeouts bound it.
			chat: { ...actions.chat, bulkhead, timeout: 0 }
		};
		schema.actions = { ...actions, ...generating } as typeof schema.actions;
	},

	created() {
		const { providers, config } = runtimeOf(this.broker);
		this.providers = createProviders(providers, config.requestTimeoutMs);
		this.breakers = new Map(providers.map(p => [p.name, new CircuitBreaker(this.settings.breaker)]));
		this.gate = new ConcurrencyGate(this.settings.concurrency);
		this.running = new Map();
		this.earlyCancels = new Map();
		this.stopping = false;
	},

	started() {
		// Live state is read when Prometheus scrapes, not counted on the way.
		this.stopMetrics = onScrape(this.broker, () => {
			setGauge(this.broker, "generationsInFlight", this.running.size);
			for (const [provider, breaker] of this.breakers) {
				const current = breaker.state;
				for (const state of BREAKER_STATES) setGauge(this.broker, "breakerState", state === current ? 1 : 0, { provider, state });
			}
		});
	},

	/**
	 * Graceful stop. Moleculer has already waited for in-flight calls, but a stream's call ends
	 * at its first token, so running generations are waited for here, up to the drain timeout;
	 * the rest are aborted upstream and end with an `error` line SERVICE_UNAVAILABLE (their
	 * callers see an interrupted answer, never a silent one). Then the last lines are flushed to
	 * the transporter before the broker disconnects.
	 */
	async stopped() {
		this.stopMetrics?.();
		this.stopping = true;
		const entries = [...this.running.values()];
		if (entries.length > 0) {
			this.logger.info(`Waiting up to ${this.settings.drainTimeoutMs} ms for ${entries.length} running generation(s)`);
			const all = Promise.allSettled(entries.map(e => e.finished));
			let timer: NodeJS.Timeout | undefined;
			await Promise.race([all, new Promise(resolve => (timer = setTimeout(resolve, this.settings.drainTimeoutMs)))]);
			clearTimeout(timer);
			for (const { generation } of this.running.values()) generation.stop("shutdown");
			await all;
			await Promise.all(entries.map(e => e.stream?.drained(1000)));
		}
		this.running.clear();
		this.earlyCancels.clear();
	}
};

export default LlmService;
