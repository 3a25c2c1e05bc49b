/**
 * One chat turn on the node that owns it: read the llm service's NDJSON stream, append every
 * chunk to the generation log (which the gateways read), and end the assistant message in a
 * final state with the text produced so far — completed, cancelled, failed or interrupted.
 * The turn runs to its end whether or not any client is still watching.
 */
import { createInterface, type Interface } from "node:readline";
import type { Readable } from "node:stream";
import type { GenerationWriter } from "../../lib/generations/log";
import type { FinalStatus, FinishReason, LlmStreamLine, ToolCall, Usage } from "../../lib/generations/types";

export interface TurnOutcome {
	status: FinalStatus;
	content: string;
	usage: Usage | null;
	model: string | null;
	finishReason?: FinishReason;
	toolCalls: ToolCall[] | null;
	error: { code: string; message: string } | null;
}

export interface TurnHooks {
	/** Called once the producing llm node is known, so its death can interrupt the turn. */
	onProducer(nodeID: string): void;
	/** Periodically, with the text so far (kept on the message row). */
	onProgress(content: string): void;
}

/** Why a turn was stopped from outside its stream. */
export type TurnStop = { status: "cancelled" | "interrupted"; code: string; message: string };

/**
 * Consumes the stream until it ends or `stop` is called. Never throws: every way a stream can
 * end is an outcome.
 */
export class TurnReader {
	private content = "";
	private model: string | null = null;
	private toolCalls: ToolCall[] | null = null;
	private stopped?: TurnStop;
	private stream?: Readable;
	private lines?: Interface;
	private lastProgress = Date.now();

	constructor(
		private readonly writer: GenerationWriter,
		private readonly hooks: TurnHooks,
		private readonly progressEveryMs = 2000
	) {}

	/** Ends the turn from outside at once (the producer died, or a cancel went unanswered). */
	stop(reason: TurnStop): void {
		if (this.stopped) return;
		this.stopped = reason;
		// Closing the line reader ends the loop in read(); a destroyed stream alone may never "end".
		this.lines?.close();
		this.stream?.destroy();
	}

	/**
	 * A cancel: the llm node got the same broadcast and ends its stream with "cancelled" and the
	 * usage so far. Should it not answer within the grace, the turn ends cancelled without it.
	 */
	cancel(graceMs: number): void {
		setTimeout(() => this.stop({ status: "cancelled", code: "CANCELLED", message: "Cancelled" }), graceMs).unref();
	}

	get text(): string {
		return this.content;
	}

	async read(stream: Readable): Promise<TurnOutcome> {
		this.stream = stream;
		let end: Extract<LlmStreamLine, { type: "end" }> | undefined;
		let failure: Extract<LlmStreamLine, { type: "error" }> | undefined;
		try {
			const lines = createInterface({ input: stream, crlfDelay: Infinity });
			this.lines = lines;
			if (this.stopped) lines.close();
			for await (const raw of lines) {
				if (!raw) continue;
				const line = JSON.parse(raw) as LlmStreamLine;
				switch (line.type) {
					case "start":
						this.model = line.model;
						this.hooks.onProducer(line.nodeID);
						break;
					case "delta":
						this.content += line.content;
						this.writer.append({ type: "chunk", delta: line.content });
						if (Date.now() - this.lastProgress >= this.progressEveryMs) {
							this.lastProgress = Date.now();
							this.hooks.onProgress(this.content);
						}
						break;
					case "tool_calls":
						this.toolCalls = line.toolCalls;
						break;
					case "end":
						end = line;
						break;
					case "error":
						failure = line;
						break;
				}
			}
		} catch (err) {
			if (!this.stopped) failure = { type: "error", code: "INTERRUPTED", message: `The answer stream broke: ${(err as Error).message}` };
		}
		return this.outcome(end, failure);
	}

	private outcome(end?: Extract<LlmStreamLine, { type: "end" }>, failure?: Extract<LlmStreamLine, { type: "error" }>): TurnOutcome {
		const base = { content: this.content, model: this.model, toolCalls: this.toolCalls };
		if (end) {
			const status: FinalStatus = end.finishReason === "cancelled" ? "cancelled" : "completed";
			return { ...base, status, usage: end.usage, finishReason: end.finishReason, error: null };
		}
		if (this.stopped)
			return { ...base, status: this.stopped.status, usage: null, error: { code: this.stopped.code, message: this.stopped.message } };
		if (failure) return { ...base, status: "failed", usage: failure.usage ?? null, error: { code: failure.code, message: failure.message } };
		// The stream ended without its last line: the producer went away mid-answer.
		return { ...base, status: "interrupted", usage: null, error: { code: "INTERRUPTED", message: "The answer stream ended early" } };
	}
}
