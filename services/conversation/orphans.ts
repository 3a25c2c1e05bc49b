/**
 * Finishes the answers whose turn lost its owner (the process running it died: see leases.ts).
 * Any live conversation node may sweep; claiming a message is one conditional update, so each
 * orphan is finished once. An orphan ends `interrupted` with its text as far as the generation log
 * had it, its terminal event goes to the log so every watcher hears it, and its quota
 * reservations are settled: what it produced is charged, the rest released.
 */
import type { GenerationEvent } from "../../lib/chat-protocol";
import { ERR_INTERRUPTED } from "../../lib/errors";
import type { GenerationLog } from "../../lib/generations/log";
import { countTokens } from "../../lib/token-count";
import type { MessageRow, MessageStore } from "./store";

export const ORPHAN_ERROR = { code: ERR_INTERRUPTED, message: "The node running this answer stopped" } as const;

export interface OrphanSweeperDeps {
	messages: MessageStore;
	generations: GenerationLog;
	/** Settles one quota reservation (quota.settle); a reservation that is not held is a no-op. */
	settle(reservationId: string, completionTokens: number): Promise<{ charged: number }>;
	logger: { warn(...args: unknown[]): void; info(...args: unknown[]): void };
	/** An orphan was finished here (its request counts as interrupted in the metrics). */
	onFinished?(row: MessageRow): void;
}

export interface OrphanSettings {
	/** A turn's model calls at the most (its reservations are `${generationId}:1` … `:maxSteps`). */
	maxSteps: number;
	/** Answers younger than this are never orphans (their owner may still be taking its lease). */
	graceMs: number;
	/** Orphans finished per sweep at the most. */
	batch: number;
}

/** The text of a generation as its log holds it: its chunks in order. */
function textOf(events: GenerationEvent[]): string {
	let text = "";
	for (const e of events) if (e.type === "chunk") text += e.delta;
	return text;
}

export class OrphanSweeper {
	constructor(
		private readonly deps: OrphanSweeperDeps,
		private readonly settings: OrphanSettings
	) {}

	/** Finishes the orphans found now; returns how many this node finished. */
	async sweep(): Promise<number> {
		const orphans = await this.deps.messages.orphaned(this.settings.graceMs, this.settings.batch);
		let finished = 0;
		for (const row of orphans) if (await this.finish(row)) finished += 1;
		return finished;
	}

	private async finish(row: MessageRow): Promise<boolean> {
		const { generations, messages, logger } = this.deps;
		const generationId = row.generation_id;
		// The log has every chunk clients saw; the row only the last saved progress. Without the
		// log (expired, or its store away) the saved progress is what there is.
		const events = generationId
			? await generations.read(generationId, 0).catch((err: unknown) => {
					logger.warn("An orphaned answer's log could not be read; its saved progress stands", { generationId, err: (err as Error).message });
					return undefined;
				})
			: undefined;
		const content = events ? textOf(events) : row.content;
		const claimed = await messages.finish(row.id, row.created_at, { content, status: "interrupted", model: row.model, usage: null, error: ORPHAN_ERROR });
		if (!claimed) return false; // another node finished it first
		this.deps.onFinished?.(row);
		if (generationId) {
			await this.endLog(generationId, row.id);
			await this.settleReservations(generationId, countTokens(content));
		}
		logger.info("Finished an answer whose node stopped as interrupted", { generationId, chars: content.length });
		return true;
	}

	/** The terminal event, appended after whatever the dead owner wrote last. */
	private async endLog(generationId: string, messageId: string): Promise<void> {
		try {
			const writer = await this.deps.generations.adopt(generationId);
			if (!writer) return; // expired, or already ended
			writer.append({ type: "error", messageId, status: "interrupted", ...ORPHAN_ERROR });
			await writer.flush();
		} catch (err) {
			this.deps.logger.warn("The terminal event of an orphaned answer could not be written to its log", { generationId, err });
		}
	}

	/** Charges what was produced to the latest reservation still held, and releases the others. */
	private async settleReservations(generationId: string, completionTokens: number): Promise<void> {
		let toCharge = completionTokens;
		for (let step = this.settings.maxSteps; step >= 1; step--) {
			try {
				const { charged } = await this.deps.settle(`${generationId}:${step}`, toCharge);
				if (charged > 0) toCharge = 0;
			} catch (err) {
				// The hourly stale-reservation release frees what this could not.
				this.deps.logger.warn("A reservation of an orphaned answer could not be settled", { generationId, step, err });
			}
		}
	}
}
