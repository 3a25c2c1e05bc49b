/**
 * One generation: a streamed chat completion through the fallback chain of providers that
 * serve its model, with first-token and idle timeouts, per-provider breakers, and a stop switch.
 *
 * The rule for errors: a generation commits to a provider at the provider's first token (text,
 * a tool-call delta or the finish). Before that, a provider fault (UPSTREAM_ERROR, _TIMEOUT,
 * _RATE_LIMITED) moves on to the next provider, and when none is left the generation fails
 * uncommitted: `llm.stream` and `llm.chat` throw it. After it, nothing is retried (the tokens
 * are already out): `llm.stream` ends with an `error` line, `llm.chat` throws.
 *
 * `run()` never throws; its result says how the generation ended.
 */
import type { Logger } from "moleculer";
import type { ChatCompletionCreateParamsStreaming, ChatCompletionMessageParam } from "openai/resources/chat/completions";
import { ERR_UPSTREAM_ERROR, UpstreamError } from "../../lib/errors";
import type { ChatMessage, FinishReason, ToolCall, ToolDefinition, Usage } from "../../lib/chat-protocol";
import { GapRecorder } from "../../lib/metrics";
import { Accumulator, countPromptTokens } from "./accumulator";
import type { CircuitBreaker } from "./breaker";
import type { ConcurrencyGate } from "./gate";
import { streamChatCompletion } from "./provider-stream";
import type { Provider } from "./providers";
import { isProviderFault, toUpstreamError, upstreamDetail, type AbortReason } from "./upstream-errors";

export interface GenerationRequest {
	generationId: string;
	messages: ChatMessage[];
	/** Resolved already: named by the caller or picked by the router, and served by `providers`. */
	model: string;
	tools?: ToolDefinition[];
	maxTokens?: number;
	temperature?: number;
}

export interface GenerationDeps {
	/** The providers serving the model, in fallback order. */
	providers: Provider[];
	breakerOf(provider: string): CircuitBreaker;
	gate: ConcurrencyGate;
	firstTokenTimeoutMs: number;
	idleTimeoutMs: number;
	logger: Logger;
	/** Where the generation's measurements go (the llm service writes them to the node's metrics). */
	observer?: GenerationObserver;
}

/** Measurements of one generation, as they happen. */
export interface GenerationObserver {
	/** Seconds from run() (queueing included) to the first token. */
	firstToken(seconds: number): void;
	/** A provider attempt failed (`kind`: the error type) or was skipped with its circuit open. */
	providerError(provider: string, kind: string): void;
	/** The generation ended; `gaps` holds its inter-chunk gaps, to be added in one step. */
	finished(result: GenerationResult, gaps: GapRecorder): void;
}

/** Why a generation was stopped from outside. */
export type StopKind = "cancelled" | "consumer-gone" | "shutdown" | "deadline";

export interface GenerationSink {
	/** The first token arrived: the generation is committed to this provider. */
	start(provider: string, model: string): void;
	delta(content: string): void;
}

export interface GenerationResult {
	/** finished: the provider finished the answer; stopped: stop() ended it; failed: see `error`. */
	outcome: "finished" | "stopped" | "failed";
	stop?: StopKind;
	error?: UpstreamError;
	/** Whether a first token arrived (and `start` was sent). */
	committed: boolean;
	/** The provider committed to, else the last one tried, else the first candidate. */
	provider: string;
	model: string;
	content: string;
	/** Complete tool calls; only for a finished generation. */
	toolCalls: ToolCall[];
	/** "cancelled" unless finished. */
	finishReason: FinishReason;
	usage: Usage;
	usageSource: "provider" | "tokenizer";
}

type AttemptResult = { kind: "finished" } | { kind: "stopped" } | { kind: "failed"; error: UpstreamError; detail: string };

interface AttemptRecord {
	provider: string;
	type: string;
	status?: number;
	skipped?: "circuit-open";
}

function toOpenAiMessages(messages: readonly ChatMessage[]): ChatCompletionMessageParam[] {
	return messages.map(m => {
		const out: Record<string, unknown> = { role: m.role, content: m.content ?? (m.role === "assistant" ? null : "") };
		if (m.tool_calls?.length) out.tool_calls = m.tool_calls;
		if (m.tool_call_id !== undefined) out.tool_call_id = m.tool_call_id;
		if (m.name !== undefined) out.name = m.name;
		return out as unknown as ChatCompletionMessageParam;
	});
}

export class Generation {
	readonly id: string;
	/** The provider committed to, or being tried. */
	provider: string;
	private committed = false;
	private done = false;
	private stopKind?: StopKind;
	private readonly stopper = new AbortController();
	private attemptController?: AbortController;
	private accumulator: Accumulator;
	private promptTokens?: number;
	private startedAt = 0;
	/** Inter-chunk gaps, kept only when someone observes them. */
	private readonly gaps?: GapRecorder;

	constructor(
		readonly request: GenerationRequest,
		private readonly deps: GenerationDeps
	) {
		this.id = request.generationId;
		this.provider = deps.providers[0]?.config.name ?? "none";
		this.accumulator = this.newAccumulator();
		if (deps.observer) this.gaps = new GapRecorder();
	}

	/** Ends the generation from outside: aborts the upstream request (or the wait for a slot). Idempotent. */
	stop(kind: StopKind): void {
		if (this.done || this.stopKind) return;
		this.stopKind = kind;
		this.stopper.abort();
		this.attemptController?.abort({ kind: "stop" } satisfies AbortReason);
	}

	async run(sink: GenerationSink): Promise<GenerationResult> {
		this.startedAt = performance.now();
		const release = await this.deps.gate.acquire(this.stopper.signal);
		try {
			if (!release) return this.result("stopped");
			const attempts: AttemptRecord[] = [];
			let lastError: UpstreamError | undefined;
			for (const provider of this.deps.providers) {
				if (this.stopKind) break;
				const name = provider.config.name;
				const breaker = this.deps.breakerOf(name);
				if (!breaker.tryAcquire()) {
					this.deps.observer?.providerError(name, "CIRCUIT_OPEN");
					attempts.push({ provider: name, type: ERR_UPSTREAM_ERROR, skipped: "circuit-open" });
					continue;
				}
				this.provider = name;
				const attempt = await this.attempt(provider, breaker, sink);
				if (attempt.kind === "finished") return this.result("finished");
				if (attempt.kind === "stopped") {
					if (!this.committed) breaker.release();
					return this.result("stopped");
				}

				const { error } = attempt;
				this.deps.observer?.providerError(name, error.type);
				const fault = isProviderFault(error.type);
				if (!fault)
					breaker.success(); // it answered: the request is what it refused
				else if (breaker.failure()) this.deps.logger.warn(`Circuit opened for provider "${name}" after repeated failures`);
				// The one line about this failure: callers and the gateway leave upstream failures to it.
				this.deps.logger.warn("Model provider failed", {
					generationId: this.id,
					provider: name,
					model: this.request.model,
					type: error.type,
					status: (error.data as { status?: number }).status,
					cause: withoutSecret(attempt.detail, provider.config.apiKey)
				});
				if (this.committed || !fault) return this.result("failed", error);
				attempts.push({ provider: name, type: error.type, status: (error.data as { status?: number }).status });
				lastError = error;
			}
			if (this.stopKind) return this.result("stopped");
			if (!lastError) this.deps.logger.warn("No provider could be tried: every circuit is open", { generationId: this.id, model: this.request.model });
			return this.result("failed", this.exhausted(attempts, lastError));
		} finally {
			release?.();
		}
	}

	private async attempt(provider: Provider, breaker: CircuitBreaker, sink: GenerationSink): Promise<AttemptResult> {
		const { firstTokenTimeoutMs, idleTimeoutMs } = this.deps;
		const ctx = { provider: provider.config.name, model: this.request.model };
		const controller = new AbortController();
		this.attemptController = controller;
		this.accumulator = this.newAccumulator();
		const abortWith = (reason: AbortReason) => controller.abort(reason);
		let timer = setTimeout(abortWith, firstTokenTimeoutMs, { kind: "first-token-timeout", ms: firstTokenTimeoutMs });
		let idle = false;
		// Called per chunk: after the first, the idle timer is only pushed back (refresh), not remade.
		const rearm = () => {
			if (idle) return void timer.refresh();
			clearTimeout(timer);
			idle = true;
			timer = setTimeout(abortWith, idleTimeoutMs, { kind: "idle-timeout", ms: idleTimeoutMs });
		};
		const aborted = (): AttemptResult => {
			const reason = controller.signal.reason as AbortReason;
			if (reason.kind === "stop") return { kind: "stopped" };
			return { kind: "failed", error: toUpstreamError(undefined, ctx, reason), detail: reason.kind };
		};

		try {
			await streamChatCompletion(provider.chat, this.body(), controller.signal, chunk => {
				if (this.committed) {
					rearm();
					this.gaps?.chunk(performance.now());
				} else if (Accumulator.isToken(chunk)) {
					this.committed = true;
					const now = performance.now();
					this.gaps?.chunk(now);
					this.deps.observer?.firstToken((now - this.startedAt) / 1000);
					breaker.success();
					sink.start(ctx.provider, ctx.model);
					rearm();
				}
				const text = this.accumulator.add(chunk);
				if (text) sink.delta(text);
			});
			if (controller.signal.aborted) return aborted();
			if (this.accumulator.rawFinishReason === null) {
				const error = toUpstreamError(new Error("stream ended without a finish reason"), ctx);
				return { kind: "failed", error, detail: "stream ended without a finish reason" };
			}
			return { kind: "finished" };
		} catch (err) {
			if (controller.signal.aborted) return aborted();
			return { kind: "failed", error: toUpstreamError(err, ctx), detail: upstreamDetail(err) };
		} finally {
			clearTimeout(timer);
			this.attemptController = undefined;
		}
	}

	private body(): ChatCompletionCreateParamsStreaming {
		const { model, messages, tools, maxTokens, temperature } = this.request;
		return {
			model,
			messages: toOpenAiMessages(messages),
			stream: true,
			stream_options: { include_usage: true },
			...(tools?.length ? { tools } : {}),
			...(maxTokens !== undefined ? { max_tokens: maxTokens } : {}),
			...(temperature !== undefined ? { temperature } : {})
		};
	}

	/** The error once no provider is left: the last provider's, with every attempt in its data. */
	private exhausted(attempts: AttemptRecord[], last: UpstreamError | undefined): UpstreamError {
		const model = this.request.model;
		if (!last)
			return new UpstreamError(`Every provider of model "${model}" is unavailable (circuit open)`, ERR_UPSTREAM_ERROR, {
				model,
				attempts
			});
		const message = attempts.length > 1 ? `All ${attempts.length} providers of model "${model}" failed; last: ${last.message}` : last.message;
		return new UpstreamError(message, last.type, { ...(last.data as object), attempts });
	}

	private newAccumulator(): Accumulator {
		return new Accumulator(this.id, () => (this.promptTokens ??= countPromptTokens(this.request.messages)));
	}

	private result(outcome: GenerationResult["outcome"], error?: UpstreamError): GenerationResult {
		this.done = true;
		const finished = outcome === "finished";
		const result: GenerationResult = {
			outcome,
			stop: this.stopKind,
			error,
			committed: this.committed,
			provider: this.provider,
			model: this.request.model,
			content: this.accumulator.content,
			toolCalls: finished ? this.accumulator.toolCalls() : [],
			finishReason: finished ? this.accumulator.finishReason() : "cancelled",
			...this.accumulator.usage()
		};
		if (this.gaps) this.deps.observer?.finished(result, this.gaps);
		return result;
	}
}

/** A provider's error text may quote the key it was sent (some echo it back); it never reaches a log. */
function withoutSecret(text: string, secret: string | undefined): string {
	return secret ? text.replaceAll(secret, "[redacted]") : text;
}
