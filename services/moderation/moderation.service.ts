/**
 * moderation: the content policy's verdict on a text going into a model (a user's "input", a
 * tool's result fed back as "tool") or coming out of it ("output"). Every check in ./checks runs
 * in parallel and answers the same shape; the verdict's action is the most severe of theirs:
 * "block" (the turn refuses), "flag" (the turn records it; tool output is wrapped as untrusted
 * data), "allow".
 *
 * Checks: profanity/abuse (./checks/profanity.ts), prompt injection on input and tool output
 * (./checks/prompt-injection.ts), the operator's deny list (MODERATION_DENY_LIST) and, when
 * MODERATION_PROVIDER_URL is set, an OpenAI-compatible moderation endpoint (fail-open, see
 * ./checks/provider.ts). Streamed answers are checked in windows (./output-window.ts).
 */
import type { Context, ServiceSchema, ServiceSettingSchema } from "moleculer";
import { runtimeOf } from "../../lib/runtime";
import { increment } from "../../lib/metrics";
import { buildChecks, combine, DIRECTIONS, type Direction, type ModerationCheck, type ModerationVerdict } from "./checks";
import { normalize } from "./normalize";

export type { CheckVerdict, Direction, ModerationAction, ModerationCheck, ModerationVerdict } from "./checks";

export interface CheckParams {
	text: string;
	direction: Direction;
}

export interface ModerationSettings extends ServiceSettingSchema {
	/** Bound on one call to the moderation provider; past it the provider check allows (fail-open). */
	providerTimeoutMs: number;
	/** The provider's moderation model; unset lets the provider pick its default. */
	providerModel?: string;
}

interface ModerationMethods {
	moderate(text: string, direction: Direction): Promise<ModerationVerdict>;
}

interface ModerationVars {
	checks: ModerationCheck[];
}

const ModerationService: ServiceSchema<ModerationSettings, ModerationMethods, ModerationVars> = {
	name: "moderation",

	settings: {
		providerTimeoutMs: 2000
	},

	actions: {
		check: {
			visibility: "public",
			params: {
				text: { type: "string", max: 1_000_000 },
				direction: { type: "enum", values: [...DIRECTIONS] }
			},
			handler(ctx: Context<CheckParams>): Promise<ModerationVerdict> {
				return this.moderate(ctx.params.text, ctx.params.direction);
			}
		}
	},

	methods: {
		/** Runs the checks that judge this direction, in parallel, on one normalisation of the text. */
		async moderate(text: string, direction: Direction): Promise<ModerationVerdict> {
			const checks = this.checks.filter(check => check.appliesTo.includes(direction));
			const ctx = { normalized: normalize(text), logger: this.logger };
			const verdicts = await Promise.all(checks.map(check => check.run(text, direction, ctx)));
			for (const verdict of verdicts) increment(this.broker, "moderationVerdicts", { check: verdict.check, verdict: verdict.action, direction });
			return combine(verdicts);
		}
	},

	created() {
		const { config } = runtimeOf(this.broker);
		this.checks = buildChecks(config, { providerTimeoutMs: this.settings.providerTimeoutMs, providerModel: this.settings.providerModel });
	}
};

export default ModerationService;
