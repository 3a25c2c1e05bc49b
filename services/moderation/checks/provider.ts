/**
 * Provider moderation: an OpenAI-compatible `/v1/moderations` endpoint (MODERATION_PROVIDER_URL)
 * judges the text with a model; flagged blocks, with the provider's flagged categories.
 *
 * Fail-open, for this check only: when the provider errs or times out, the check allows with a
 * reason saying it was unavailable. The local checks still run and still block; an outage of an
 * optional third-party classifier must not take the whole chat product down with it. The outage
 * is logged once when it starts and once when it ends, not once per message.
 */
import OpenAI from "openai";
import type { CheckContext, CheckVerdict, Direction, ModerationCheck } from "./check";
import { allow } from "./check";

export interface ProviderCheckOptions {
	baseURL: string;
	apiKey?: string;
	/** Bound on one moderation call. */
	timeoutMs: number;
	/** The moderation model; unset lets the provider choose its default. */
	model?: string;
}

export function providerCheck(options: ProviderCheckOptions): ModerationCheck {
	const name = "provider";
	const client = new OpenAI({
		baseURL: options.baseURL,
		// Local servers accept any key; the SDK insists on one.
		apiKey: options.apiKey ?? "no-key",
		maxRetries: 0,
		timeout: options.timeoutMs
	});
	let outageSince: number | undefined;

	return {
		name,
		appliesTo: ["input", "output", "tool"] satisfies Direction[],
		async run(text: string, _direction: Direction, ctx: CheckContext): Promise<CheckVerdict> {
			let response: OpenAI.Moderations.ModerationCreateResponse;
			try {
				response = await client.moderations.create({ input: text, ...(options.model ? { model: options.model } : {}) });
			} catch (err) {
				const detail = err instanceof Error ? err.message : String(err);
				if (outageSince === undefined) {
					outageSince = Date.now();
					ctx.logger.warn(`Moderation provider unavailable (${detail}); allowing texts without it until it answers again`);
				}
				return allow(name, [`provider: moderation provider unavailable (${detail}); not judged by it`]);
			}
			if (outageSince !== undefined) {
				ctx.logger.info(`Moderation provider answers again after ${Math.round((Date.now() - outageSince) / 1000)} s`);
				outageSince = undefined;
			}
			const flagged = response.results.filter(result => result.flagged);
			if (flagged.length === 0) return allow(name);
			const categories = new Set<string>();
			for (const result of flagged) for (const [category, hit] of Object.entries(result.categories)) if (hit === true) categories.add(category);
			if (categories.size === 0) categories.add("flagged");
			return { check: name, action: "block", categories: [...categories], reasons: [`provider: flagged (${[...categories].join(", ")})`] };
		}
	};
}
