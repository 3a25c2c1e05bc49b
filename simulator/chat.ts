/**
 * `POST /v1/chat/completions`: validation, error injection, the answer plan (text, echo, tool
 * calls or an answer to tool results) and its delivery, streamed or not, on the knobs' timing.
 *
 * Streaming writes one SSE frame per token with res.write. Frames are built by string
 * concatenation around a per-response prefix, so a token costs one JSON.stringify of the word.
 */
import { randomUUID } from "node:crypto";
import { isClosed, sendError, sendJson, type RequestContext } from "./http";
import { effectiveKnobs, parseOverrideHeaders, SimulatorConfigError, type EffectiveKnobs, type ErrorGate, type SimulatorKnobs } from "./options";
import { canonicalMessages, contentText, countPromptTokens, hashString, splitWordTokens, TokenSource } from "./text";
import { argumentFragments, offeredTools, planToolCalls } from "./tools";

export interface ChatEnvironment {
	/** The process-level knobs at the time of the request. */
	knobs: SimulatorKnobs;
	errorGate: ErrorGate;
	/** Registers a running answer so close() can stop it; returns the unregister function. */
	track(stop: () => void): () => void;
}

/** The prefix of answers to tool results. */
const TOOL_RESULTS_PREFIX = "Based on the tool results: ";

/** In the zero-interval tight loop, yield to the event loop after this many tokens. */
const TOKENS_PER_TURN = 64;

const SYSTEM_FINGERPRINT = "fp_chatmesh_sim";

type FinishReason = "stop" | "length" | "tool_calls";

interface ToolCallOut {
	id: string;
	type: "function";
	function: { name: string; arguments: string };
}

type AnswerPlan =
	| { kind: "text"; source: TokenSource; count: number; finishReason: FinishReason }
	| { kind: "tools"; calls: ToolCallOut[]; deltas: string[]; finishReason: FinishReason };

function isRecord(value: unknown): value is Record<string, unknown> {
	return typeof value === "object" && value !== null && !Array.isArray(value);
}

function newId(prefix: string, hexLength: number): string {
	return prefix + randomUUID().replaceAll("-", "").slice(0, hexLength);
}

/** `max_completion_tokens` or `max_tokens`: undefined when absent, null when invalid. */
function readTokenLimit(body: Record<string, unknown>): { value: number | undefined; param: string } | null {
	for (const param of ["max_completion_tokens", "max_tokens"]) {
		const value = body[param];
		if (value === undefined || value === null) continue;
		if (typeof value !== "number" || !Number.isInteger(value) || value < 1) return null;
		return { value, param };
	}
	return { value: undefined, param: "max_tokens" };
}

function buildPlan(body: Record<string, unknown>, messages: readonly unknown[], knobs: EffectiveKnobs, limit: number | undefined): AnswerPlan {
	const last = messages[messages.length - 1];
	const lastRole = isRecord(last) ? last.role : undefined;
	const seed = hashString(canonicalMessages(messages));

	if (lastRole === "user" && isRecord(last)) {
		const planned = planToolCalls(contentText(last.content), offeredTools(body.tools), {
			toolChoice: body.tool_choice,
			parallelToolCalls: body.parallel_tool_calls
		});
		if (planned.length > 0) {
			const calls: ToolCallOut[] = planned.map(call => ({
				id: newId("call_", 24),
				type: "function",
				function: { name: call.name, arguments: call.arguments }
			}));
			const deltas: string[] = [];
			calls.forEach((call, index) => {
				deltas.push(JSON.stringify({ tool_calls: [{ index, id: call.id, type: "function", function: { name: call.function.name, arguments: "" } }] }));
				for (const fragment of argumentFragments(call.function.arguments)) {
					deltas.push(JSON.stringify({ tool_calls: [{ index, function: { arguments: fragment } }] }));
				}
			});
			return { kind: "tools", calls, deltas, finishReason: "tool_calls" };
		}
	}

	let prefix: string[] = [];
	let generated = knobs.outputTokens;
	if (lastRole === "tool") {
		// The results of the trailing run of tool messages, in order.
		let first = messages.length - 1;
		while (first > 0 && isRecord(messages[first - 1]) && (messages[first - 1] as Record<string, unknown>).role === "tool") first--;
		const results = messages.slice(first).map(m => contentText((m as Record<string, unknown>).content));
		prefix = splitWordTokens(TOOL_RESULTS_PREFIX + results.join("; "));
	} else if (knobs.echo) {
		const lastUser = [...messages].reverse().find(m => isRecord(m) && m.role === "user");
		prefix = splitWordTokens(isRecord(lastUser) ? contentText(lastUser.content) : "");
		generated = 0;
	}
	const natural = prefix.length + generated;
	const count = limit !== undefined && limit < natural ? limit : natural;
	return { kind: "text", source: new TokenSource(prefix, seed, natural), count, finishReason: count < natural ? "length" : "stop" };
}

/** Handles a parsed chat completion request body. Never throws. */
export function handleChatCompletion(ctx: RequestContext, body: unknown, env: ChatEnvironment): void {
	const entry = ctx.entry;

	let knobs: EffectiveKnobs;
	try {
		knobs = effectiveKnobs(env.knobs, parseOverrideHeaders(ctx.req.headers));
	} catch (error) {
		if (error instanceof SimulatorConfigError) {
			sendError(ctx, 400, error.message, error.key, "invalid_simulator_header");
			return;
		}
		throw error;
	}

	if (!isRecord(body)) {
		sendError(ctx, 400, "The request body must be a JSON object.", null, "invalid_json");
		return;
	}
	const model = typeof body.model === "string" ? body.model : null;
	const stream = body.stream === true;
	const messages = Array.isArray(body.messages) ? body.messages : null;
	if (entry) {
		entry.model = model;
		entry.stream = stream;
		entry.messages = messages;
		entry.tools = offeredTools(body.tools).map(t => t.name);
	}

	if (messages === null || messages.length === 0) {
		sendError(ctx, 400, "'messages' must be a non-empty array of messages.", "messages", "invalid_value");
		return;
	}
	const badIndex = messages.findIndex(m => !isRecord(m) || typeof m.role !== "string");
	if (badIndex >= 0) {
		sendError(ctx, 400, `Invalid message at messages[${badIndex}]: expected an object with a string 'role'.`, `messages[${badIndex}]`, "invalid_value");
		return;
	}
	if (model === null) {
		sendError(ctx, 400, "You must provide a model parameter.", "model", "missing_required_parameter");
		return;
	}
	if (!env.knobs.models.includes(model)) {
		sendError(ctx, 404, `The model '${model}' does not exist or you do not have access to it.`, "model", "model_not_found");
		return;
	}
	const limit = readTokenLimit(body);
	if (limit === null) {
		sendError(ctx, 400, "max_tokens / max_completion_tokens must be a positive integer.", "max_tokens", "invalid_value");
		return;
	}

	if (env.errorGate.shouldFail(knobs.errorRate)) {
		sendError(ctx, knobs.errorStatus, `Simulated upstream error (status ${knobs.errorStatus}).`, null, "simulated_error");
		return;
	}

	const plan = buildPlan(body, messages, knobs, limit.value);
	const promptTokens = countPromptTokens(messages);
	if (entry) entry.promptTokens = promptTokens;
	const streamOptions = body.stream_options;
	const includeUsage = stream && isRecord(streamOptions) && streamOptions.include_usage === true;

	const answer = new Answer(ctx, env, knobs, plan, model, promptTokens);
	if (stream) answer.stream(includeUsage);
	else answer.respond();
}

/** One answer in production: its timers, its tokens, its stop switch. */
class Answer {
	private readonly id = newId("chatcmpl-", 29);
	private readonly created = Math.floor(Date.now() / 1000);
	private readonly total: number;
	private produced = 0;
	private stopped = false;
	private timer: NodeJS.Timeout | null = null;
	private immediate: NodeJS.Immediate | null = null;
	private waitingDrain = false;
	/** When the next paced token is due (performance.now() ms); keeps pacing free of timer drift. */
	private nextDue = 0;
	private readonly untrack: () => void;
	/** Stream framing, set when streaming starts. */
	private chunkPrefix = "";
	private chunkSuffix = "";
	private includeUsage = false;

	constructor(
		private readonly ctx: RequestContext,
		env: ChatEnvironment,
		private readonly knobs: EffectiveKnobs,
		private readonly plan: AnswerPlan,
		private readonly model: string,
		private readonly promptTokens: number
	) {
		this.total = plan.kind === "text" ? plan.count : plan.deltas.length;
		this.untrack = env.track(() => this.stop());
		ctx.res.once("close", () => this.stop());
		if (isClosed(ctx.res)) this.stop(); // the client left before the answer started
	}

	/** Stops production for good: clears every timer and listener. Idempotent. */
	stop(): void {
		if (this.stopped) return;
		this.stopped = true;
		if (this.timer) clearTimeout(this.timer);
		if (this.immediate) clearImmediate(this.immediate);
		this.timer = null;
		this.immediate = null;
		if (this.waitingDrain) this.ctx.res.off("drain", this.onDrain);
		this.waitingDrain = false;
		this.untrack();
	}

	private get hangsNow(): boolean {
		return this.knobs.hangAfterTokens !== null && this.produced >= this.knobs.hangAfterTokens;
	}

	private usage(completionTokens: number) {
		return {
			prompt_tokens: this.promptTokens,
			completion_tokens: completionTokens,
			total_tokens: this.promptTokens + completionTokens,
			prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
			completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 }
		};
	}

	private setProduced(count: number): void {
		this.produced = count;
		if (this.ctx.entry) this.ctx.entry.completionTokens = count;
	}

	// ----------------------------------------------------------------------------------------
	// Non-stream
	// ----------------------------------------------------------------------------------------

	respond(): void {
		const { ttftMs, tokenIntervalMs, hang, hangAfterTokens } = this.knobs;
		if (this.stopped || hang) return; // nothing is ever sent; the client's disconnect ends it
		if (hangAfterTokens !== null && hangAfterTokens < this.total) {
			const delay = ttftMs + Math.max(0, hangAfterTokens - 1) * tokenIntervalMs;
			this.timer = setTimeout(() => {
				this.timer = null;
				this.setProduced(hangAfterTokens);
			}, delay);
			return;
		}
		const delay = ttftMs + Math.max(0, this.total - 1) * tokenIntervalMs;
		if (delay > 0) {
			this.timer = setTimeout(() => {
				this.timer = null;
				this.sendCompletion();
			}, delay);
		} else {
			this.sendCompletion();
		}
	}

	private sendCompletion(): void {
		if (this.stopped || isClosed(this.ctx.res)) {
			this.stop();
			return;
		}
		const plan = this.plan;
		const message =
			plan.kind === "text"
				? { role: "assistant", content: plan.source.take(plan.count), refusal: null, annotations: [] }
				: { role: "assistant", content: null, refusal: null, annotations: [], tool_calls: plan.calls };
		this.setProduced(this.total);
		if (this.ctx.entry) this.ctx.entry.finishReason = plan.finishReason;
		this.stop();
		sendJson(this.ctx, 200, {
			id: this.id,
			object: "chat.completion",
			created: this.created,
			model: this.model,
			system_fingerprint: SYSTEM_FINGERPRINT,
			choices: [{ index: 0, message, logprobs: null, finish_reason: plan.finishReason }],
			usage: this.usage(this.total),
			service_tier: "default"
		});
	}

	// ----------------------------------------------------------------------------------------
	// Stream
	// ----------------------------------------------------------------------------------------

	stream(includeUsage: boolean): void {
		const { res } = this.ctx;
		if (this.stopped || isClosed(res)) {
			this.stop();
			return;
		}
		this.chunkPrefix =
			`data: {"id":"${this.id}","object":"chat.completion.chunk","created":${this.created},` +
			`"model":${JSON.stringify(this.model)},"system_fingerprint":"${SYSTEM_FINGERPRINT}","choices":[`;
		this.chunkSuffix = includeUsage ? `],"usage":null}\n\n` : `]}\n\n`;
		this.includeUsage = includeUsage;

		if (this.ctx.entry) this.ctx.entry.status = 200;
		res.writeHead(200, {
			"content-type": "text/event-stream; charset=utf-8",
			"cache-control": "no-cache",
			connection: "keep-alive",
			"x-request-id": this.ctx.requestId
		});
		const roleDelta = this.plan.kind === "text" ? `{"role":"assistant","content":""}` : `{"role":"assistant","content":null}`;
		res.write(this.frame(roleDelta, null));

		if (this.knobs.hang) return; // headers and role chunk only, until the client goes away
		if (this.knobs.ttftMs > 0) {
			this.timer = setTimeout(this.step, this.knobs.ttftMs);
		} else {
			this.step();
		}
	}

	private frame(deltaJson: string, finishReason: FinishReason | null): string {
		const finish = finishReason === null ? "null" : `"${finishReason}"`;
		return `${this.chunkPrefix}{"index":0,"delta":${deltaJson},"logprobs":null,"finish_reason":${finish}}${this.chunkSuffix}`;
	}

	private nextDelta(): string {
		const plan = this.plan;
		if (plan.kind === "text") return `{"content":${JSON.stringify(plan.source.next())}}`;
		return plan.deltas[this.produced] as string;
	}

	/** Writes the next token (or, with no interval, up to TOKENS_PER_TURN) and schedules the rest. */
	private readonly step = (): void => {
		this.timer = null;
		this.immediate = null;
		const { res } = this.ctx;
		if (this.stopped) return;
		if (isClosed(res)) {
			this.stop();
			return;
		}

		const interval = this.knobs.tokenIntervalMs;
		const batch = interval > 0 ? 1 : TOKENS_PER_TURN;
		let writable = true;
		let written = 0;
		if (batch > 1) res.cork();
		while (written < batch && this.produced < this.total && !this.hangsNow) {
			writable = res.write(this.frame(this.nextDelta(), null));
			this.setProduced(this.produced + 1);
			written++;
			if (!writable) break;
		}
		if (batch > 1) res.uncork();

		if (this.produced >= this.total) {
			this.finish();
			return;
		}
		if (this.hangsNow) return; // produced N tokens; now silent until the client goes away
		if (!writable) {
			this.waitingDrain = true;
			res.once("drain", this.onDrain);
			return;
		}
		if (interval > 0) this.schedulePaced(interval);
		else this.immediate = setImmediate(this.step);
	};

	/**
	 * Schedules the next paced token on an ideal timeline (first token + k * interval), so timer
	 * lateness does not accumulate; after a long stall (backpressure, a busy loop) the timeline
	 * restarts from now rather than bursting to catch up.
	 */
	private schedulePaced(interval: number): void {
		const now = performance.now();
		this.nextDue = this.nextDue === 0 ? now + interval : this.nextDue + interval;
		if (this.nextDue < now) this.nextDue = now + interval;
		this.timer = setTimeout(this.step, Math.max(0, this.nextDue - now));
	}

	private readonly onDrain = (): void => {
		this.waitingDrain = false;
		if (this.stopped) return;
		const interval = this.knobs.tokenIntervalMs;
		if (interval > 0) this.schedulePaced(interval);
		else this.step();
	};

	private finish(): void {
		const { res } = this.ctx;
		if (this.ctx.entry) this.ctx.entry.finishReason = this.plan.finishReason;
		let tail = this.frame("{}", this.plan.finishReason);
		if (this.includeUsage) {
			tail += `${this.chunkPrefix}],"usage":${JSON.stringify(this.usage(this.total))}}\n\n`;
		}
		tail += "data: [DONE]\n\n";
		this.stop();
		res.end(tail);
	}
}
