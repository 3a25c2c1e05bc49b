/**
 * One running chat turn, from the moment its rows are stored to its final write. The Turn owns
 * the answer's output checks (in windows, as it streams), the stream reader's callbacks, saving
 * progress, cancel, the loss of the model node producing it, the assistant message's final state
 * and the terminal event. The conversation service only creates Turns and keeps them by
 * generation id (./turn-steps.ts runs the model → tools loop, ./turn-reader.ts reads each stream).
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger, ServiceBroker } from "moleculer";
import { ERR_CONTENT_BLOCKED, ERR_INTERNAL, ERR_INTERRUPTED } from "../../lib/errors";
import type { GenerationWriter } from "../../lib/generations/log";
import { recordChatRequest } from "../../lib/metrics";
import { persist, persistOrGiveUp } from "../../lib/persist";
import { CANCEL_EVENT } from "../llm/client";
import { OutputChecks } from "../moderation/client";
import type { MessageStore } from "./store";
import { TurnReader } from "./turn-reader";
import { POLICY_NOTICE, runSteps, STREAM_MARGIN_MS, type TurnOutcome, type TurnPlan, type TurnSettings } from "./turn-steps";

export interface TurnOptions extends TurnSettings {
	/** How long a cancelled turn waits for the llm node's own "cancelled" end. */
	cancelGraceMs: number;
	/** The llm node's own bound on silence between chunks (LLM_IDLE_TIMEOUT_MS); the turn waits that, plus a margin. */
	idleTimeoutMs: number;
	/** How often the text so far is saved on the message row. */
	progressEveryMs?: number;
}

export interface TurnDeps {
	broker: ServiceBroker;
	logger: Logger;
	messages: Pick<MessageStore, "saveProgress" | "finish">;
	writer: GenerationWriter;
	options: TurnOptions;
	/** After the final row is written and before the terminal event (the service drops its caches). */
	onStored?(plan: TurnPlan): Promise<void>;
}

/** A title from the first message: its first words, cut at a word boundary. */
export function titleFrom(content: string): string {
	const flat = content.replace(/\s+/g, " ").trim();
	if (flat.length <= 60) return flat;
	const cut = flat.slice(0, 60);
	const space = cut.lastIndexOf(" ");
	return `${(space > 30 ? cut.slice(0, space) : cut).trimEnd()}…`;
}

/** How long the final state and the terminal event are tried again while their store is away. */
const FINAL_RETRY_MS = 5 * 60_000;
/** How long the terminal event waits for the final state to be stored before it goes out anyway. */
const FINAL_WRITE_WAIT_MS = 10_000;

export class Turn {
	private readonly reader: TurnReader;
	private readonly output: OutputChecks;
	private producer?: string;
	private finished?: Promise<void>;
	private readonly startedAt = performance.now();

	constructor(
		readonly plan: TurnPlan,
		private readonly deps: TurnDeps
	) {
		const { broker, logger, messages, writer, options } = deps;
		this.output = new OutputChecks(broker, logger, () => this.block());
		this.reader = new TurnReader(
			writer,
			{
				onProducer: nodeID => (this.producer = nodeID),
				onProgress: text =>
					void messages
						.saveProgress(plan.assistant.id, plan.assistant.created_at, text)
						// Policy: progress is a crash's safety net; the final write still stores the whole text.
						.catch((err: unknown) => logger.warn("Answer progress could not be saved", { generationId: plan.generationId, err: (err as Error).message })),
				onDelta: delta => this.output.push(delta)
			},
			options.progressEveryMs,
			options.idleTimeoutMs + STREAM_MARGIN_MS
		);
	}

	get generationId(): string {
		return this.plan.generationId;
	}

	/** Resolves when the turn's final state is stored and its terminal event appended; never rejects. */
	get done(): Promise<void> {
		this.finished ??= this.run();
		return this.finished;
	}

	/** Runs the turn to its end, with or without a client watching. */
	start(): Promise<void> {
		return this.done;
	}

	/** A cancel from any node: the llm node ends its stream "cancelled"; past the grace the turn ends without it. */
	cancel(): void {
		this.reader.cancel(this.deps.options.cancelGraceMs);
	}

	/** A node left the cluster: if it was producing this answer, the turn ends interrupted. */
	nodeLost(nodeID: string): void {
		if (this.producer === nodeID) this.interrupt("The model node stopped mid-answer");
	}

	/** Ends the turn at once as interrupted, with the text it has (node loss, shutdown). */
	interrupt(message: string): void {
		this.reader.stop({ status: "interrupted", code: ERR_INTERRUPTED, message });
	}

	private async block(): Promise<void> {
		this.reader.stop({ status: "blocked", code: ERR_CONTENT_BLOCKED, message: POLICY_NOTICE });
		// The model may run on another node: stopping the local stream alone would not reach it.
		await Promise.resolve(this.deps.broker.broadcast(CANCEL_EVENT, { generationId: this.plan.generationId })).catch((err: unknown) =>
			this.deps.logger.warn("Cancel broadcast after a policy block failed", { generationId: this.plan.generationId, err: (err as Error).message })
		);
	}

	private async run(): Promise<void> {
		const { broker, logger, writer, options } = this.deps;
		try {
			const outcome = await runSteps(broker, logger, options, this.plan, this.reader, writer);
			// The rest of the output is checked before the answer counts as complete.
			await this.output.finish();
			const stop = this.reader.stopped;
			const final = stop?.status === "blocked" ? { ...outcome, status: stop.status, error: { code: stop.code, message: stop.message } } : outcome;
			await this.finish(final);
			// Failures were logged where they happened (the llm node for a provider's); this only closes the turn.
			logger.debug("Turn ended", {
				generationId: this.plan.generationId,
				status: final.status,
				model: final.model,
				code: final.error?.code,
				usage: final.usage
			});
		} catch (err) {
			logger.error("Chat turn could not be finished", { generationId: this.plan.generationId, err });
		}
	}

	/**
	 * The message's final state first, then the terminal event, so a client told "done" finds it
	 * stored. Both are tried again while their store is away; a final state that cannot be stored
	 * within FINAL_WRITE_WAIT_MS does not hold the terminal event back any longer.
	 */
	private async finish(outcome: TurnOutcome): Promise<void> {
		const { plan } = this;
		const { messages, writer, logger } = this.deps;
		const details = { generationId: plan.generationId };
		const blocked = outcome.status === "blocked";
		recordChatRequest(this.deps.broker, outcome.status, outcome.model, outcome.provider, (performance.now() - this.startedAt) / 1000);
		const stored = persist(
			() =>
				messages.finish(plan.assistant.id, plan.assistant.created_at, {
					// Blocked output is not kept for readers: the policy notice stands in its place.
					content: blocked ? POLICY_NOTICE : outcome.content,
					status: outcome.status,
					model: outcome.model,
					usage: outcome.usage,
					toolCalls: outcome.toolCalls.length ? outcome.toolCalls : null,
					toolResults: outcome.toolResults.length ? outcome.toolResults : null,
					error: outcome.error,
					// The title too is in place before clients hear "done".
					conversationTitle: plan.firstTurn && outcome.status === "completed" ? titleFrom(plan.userContent) : null
				}),
			{ maxRetryTimeMs: FINAL_RETRY_MS, logger, what: "Storing an answer's final state", details }
		).then(
			async row => {
				if (!row) logger.warn("Assistant message was no longer streaming when its turn ended", details);
				// Policy: a cache that could not be cleaned expires by itself (its entries' TTL).
				await this.deps
					.onStored?.(plan)
					.catch((err: unknown) => logger.warn("Caches could not be cleaned after a turn", { ...details, err: (err as Error).message }));
			},
			() => undefined
		);
		await Promise.race([stored, sleep(FINAL_WRITE_WAIT_MS, undefined, { ref: false })]);
		if (outcome.status === "completed" || (outcome.status === "cancelled" && !outcome.error))
			writer.append({ type: "done", messageId: plan.assistant.id, status: outcome.status, usage: outcome.usage, finishReason: outcome.finishReason });
		else
			writer.append({
				type: "error",
				messageId: plan.assistant.id,
				status: outcome.status,
				code: outcome.error?.code ?? ERR_INTERNAL,
				message: outcome.error?.message ?? "",
				usage: outcome.usage
			});
		// The writer keeps what Redis has not confirmed and sends it again with each flush.
		await Promise.all([
			stored,
			persistOrGiveUp(() => writer.flush(), { maxRetryTimeMs: FINAL_RETRY_MS, logger, what: "Writing an answer's terminal event", details })
		]);
	}
}

/**
 * The shutdown drain: running turns get the grace to finish; those still running then end
 * interrupted, with their text, rather than vanish.
 */
export async function drainTurns(turns: Iterable<Turn>, graceMs: number): Promise<void> {
	const running = [...turns];
	const all = Promise.allSettled(running.map(t => t.done));
	let timer: NodeJS.Timeout | undefined;
	await Promise.race([all, new Promise(r => (timer = setTimeout(r, graceMs)))]);
	clearTimeout(timer);
	for (const turn of running) turn.interrupt("The server stopped mid-answer");
	await all;
}
