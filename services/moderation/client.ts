/**
 * For callers of `moderation.check` on any node: the input check, and the output checks of a
 * streamed answer in overlapping windows (./output-window.ts), shared by the chat turn and the
 * stateless completion so both judge output the same way.
 *
 * Failure policy: input is checked fail-closed (a failed check fails the request: nothing
 * unchecked reaches the model). Output and tool results are checked fail-open (a failed check
 * allows), since an answer already streaming should not die with the moderation service; every
 * such allow is logged ("Moderation check failed; allowing (fail-open)") and counted in
 * `chatmesh_moderation_failopen_total{direction}`.
 */
import type { CallingOptions, Logger, ServiceBroker } from "moleculer";
import { ContentBlockedError } from "../../lib/errors";
import { ensureMetric, increment, METRICS } from "../../lib/metrics";
import type { CheckParams, ModerationVerdict } from "./moderation.service";
import { OutputWindow } from "./output-window";

export type Verdict = Pick<ModerationVerdict, "action" | "reasons">;

export const MODERATION_FAILOPEN_METRIC = METRICS.moderationFailOpen.name;

/** Whatever can call an action: a broker or a context. */
interface Caller {
	call<TResult, TParams>(action: string, params: TParams, opts?: CallingOptions): Promise<TResult>;
}

/** Judges input; throws ContentBlockedError on a block, and any failure of the check itself. */
export async function assertInputAllowed(caller: Caller, text: string, message = "The message was blocked by the content policy"): Promise<void> {
	const verdict = await caller.call<Verdict, CheckParams>("moderation.check", { text, direction: "input" });
	if (verdict.action === "block") throw new ContentBlockedError(message, { reasons: verdict.reasons });
}

/** Judges output or a tool result; a failed check allows, logged and counted (fail-open). */
export async function checkFailOpen(broker: ServiceBroker, logger: Logger, text: string, direction: "output" | "tool"): Promise<Verdict> {
	try {
		return await broker.call<Verdict, CheckParams>("moderation.check", { text, direction });
	} catch (err) {
		ensureMetric(broker.metrics, "moderationFailOpen");
		increment(broker, "moderationFailOpen", { direction });
		logger.warn("Moderation check failed; allowing (fail-open)", { direction, err: (err as Error).message });
		return { action: "allow", reasons: [] };
	}
}

/**
 * A streamed answer's output checks: deltas in, one check per window, in order. The first block
 * calls `onBlock` once and ends the checking; `finish()` checks the tail and waits for them all.
 */
export class OutputChecks {
	private readonly window = new OutputWindow();
	private pending: Promise<void> = Promise.resolve();
	private blockedBy?: string[];

	constructor(
		private readonly broker: ServiceBroker,
		private readonly logger: Logger,
		private readonly onBlock: (reasons: string[]) => void | Promise<void>
	) {}

	/** The reasons of the block, once one happened. */
	get blocked(): string[] | undefined {
		return this.blockedBy;
	}

	push(delta: string): void {
		for (const text of this.window.push(delta)) this.check(text);
	}

	/** Checks the rest of the output; resolves when every check has answered. */
	finish(): Promise<void> {
		const rest = this.window.finish();
		if (rest) this.check(rest);
		return this.pending;
	}

	private check(text: string): void {
		this.pending = this.pending.then(async () => {
			if (this.blockedBy) return;
			const verdict = await checkFailOpen(this.broker, this.logger, text, "output");
			if (verdict.action !== "block" || this.blockedBy) return;
			this.blockedBy = verdict.reasons;
			await this.onBlock(verdict.reasons);
		});
	}
}
