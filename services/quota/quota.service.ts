/**
 * quota: token budgets. For now every reservation is granted and settling records nothing; the chat
 * turn already reserves before the model call and settles with the real usage after it, so budgets
 * slot in here without touching the turn.
 */
import type { Context, ServiceSchema } from "moleculer";
import type { Usage } from "../../lib/generations/types";

export interface ReserveParams {
	generationId: string;
	estimate: number;
}

export interface SettleParams {
	generationId: string;
	userId: string;
	usage: Usage;
}

const QuotaService: ServiceSchema = {
	name: "quota",

	actions: {
		reserve: {
			visibility: "public",
			params: { generationId: "string", estimate: { type: "number", min: 0, integer: true } },
			handler(ctx: Context<ReserveParams>): { generationId: string; reserved: number } {
				return { generationId: ctx.params.generationId, reserved: ctx.params.estimate };
			}
		},

		settle: {
			visibility: "public",
			params: {
				generationId: "string",
				userId: "string",
				usage: { type: "object", props: { promptTokens: "number", completionTokens: "number" } }
			},
			handler(ctx: Context<SettleParams>): { generationId: string; charged: number } {
				return { generationId: ctx.params.generationId, charged: 0 };
			}
		}
	}
};

export default QuotaService;
