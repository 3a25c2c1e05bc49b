/**
 * Reading a chat turn's model streams on the node that owns the turn. Each model call of the turn
 * (the first, and one more after each round of tool calls) is one `read()`; every chunk goes to
 * the generation log at once, and the text accumulates across calls. The turn can be stopped from
 * outside: cancelled, blocked by the content policy, or interrupted when its model node dies.
 */
import type { Readable } from "node:stream";
import { ERR_CANCELLED, ERR_INTERRUPTED } from "../../lib/errors";
import type { GenerationWriter } from "../../lib/generations/log";
import type { FinalStatus, FinishReason, LlmStreamLine, ToolCall, Usage } from "../../lib/chat-protocol";
import { readLineBatches } from "../llm/ndjson";

/** How one model call ended. */
export interface StepOutcome {
	kind: "end" | "error" | "stopped" | "broken";
	finishReason?: FinishReason;
	/** Provider usage, or undefined when the call ended without it. */
	usage?: Usage;
	model: string | null;
	/** The provider that answered, when one did. */
	provider: string | null;
	toolCalls: ToolCall[];
	/** The text this call produced. */
	text: string;
	error?: { code: string; message: string };
}

export interface TurnHooks {
	/** Called once the producing llm node is known, so its death can interrupt the turn. */
	onProducer(nodeID: string): void;
	/** Periodically, with the text so far (kept on the message row). */
	onProgress(content: string): void;
	/** Every text delta, after it was appended (output moderation reads them). */
	onDelta(delta: string): void;
}

/** Why a turn was stopped from outside its stream. */
export interface TurnStop {
	status: Extract<FinalStatus, "cancelled" | "interrupted" | "blocked">;
	code: string;
	message: string;
}

export class TurnReader {
	private content = "";
	private stopReason?: TurnStop;
	private stream?: Readable;
	private lastProgress = Date.now();

	constructor(
		private readonly writer: GenerationWriter,
		private readonly hooks: TurnHooks,
		private readonly progressEveryMs = 2000,
		/** Longest silence of a model stream before it counts as lost (its link or node died without closing it). */
		private readonly idleMs?: number
	) {}

	get text(): string {
		return this.content;
	}

	get stopped(): TurnStop | undefined {
		return this.stopReason;
	}

	/** Ends the turn from outside at once (the producer died, the policy blocked, a cancel went unanswered). */
	stop(reason: TurnStop): void {
		if (this.stopReason) return;
		this.stopReason = reason;
		// Destroying the stream ends read() at once.
		this.stream?.destroy();
	}

	/**
	 * A cancel: the llm node got the same broadcast and ends its stream with "cancelled" and the
	 * usage so far. Should it not answer within the grace, the turn ends cancelled without it.
	 */
	cancel(graceMs: number): void {
		setTimeout(() => this.stop({ status: "cancelled", code: ERR_CANCELLED, message: "Cancelled" }), graceMs).unref();
	}

	/** Reads one model call's NDJSON stream to its end. Never throws. */
	async read(stream: Readable): Promise<StepOutcome> {
		this.stream = stream;
		let model: string | null = null;
		let provider: string | null = null;
		let toolCalls: ToolCall[] = [];
		let text = "";
		let end: Extract<LlmStreamLine, { type: "end" }> | undefined;
		let failure: Extract<LlmStreamLine, { type: "error" }> | undefined;
		let broken: string | undefined;
		try {
			if (this.stopReason) stream.destroy();
			await readLineBatches(
				stream,
				lines => {
					for (const line of lines) {
						if (this.stopReason) return; // stopped by an earlier line of this batch (the policy blocked it)
						switch (line.type) {
							case "start":
								model = line.model;
								provider = line.provider;
								this.hooks.onProducer(line.nodeID);
								break;
							case "delta":
								text += line.content;
								this.content += line.content;
								this.writer.append({ type: "chunk", delta: line.content });
								this.hooks.onDelta(line.content);
								break;
							case "tool_calls":
								toolCalls = line.toolCalls;
								break;
							case "end":
								end = line;
								break;
							case "error":
								failure = line;
								break;
						}
					}
					if (Date.now() - this.lastProgress >= this.progressEveryMs) {
						this.lastProgress = Date.now();
						this.hooks.onProgress(this.content);
					}
				},
				{ idleMs: this.idleMs }
			);
		} catch (err) {
			broken = (err as Error).message;
		}
		const base = { model, provider, toolCalls, text };
		// A cancel answered by the llm node ends normally with "cancelled" and its usage.
		if (end) return { ...base, kind: "end", finishReason: end.finishReason, usage: end.usage };
		if (this.stopReason) return { ...base, kind: "stopped", error: { code: this.stopReason.code, message: this.stopReason.message } };
		if (failure) return { ...base, kind: "error", usage: failure.usage, error: { code: failure.code, message: failure.message } };
		// The stream ended without its last line: the producer went away mid-answer.
		return {
			...base,
			kind: "broken",
			error: { code: ERR_INTERRUPTED, message: broken ? `The answer stream broke: ${broken}` : "The answer stream ended early" }
		};
	}
}
