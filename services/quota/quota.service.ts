/**
 * quota: token budgets per user and period. A chat turn reserves its worst case (the prompt plus
 * the most the model may write) before the model is called and settles the real usage after it,
 * so concurrent requests cannot overspend: used + reserved never passes the limit. A scheduled
 * reset runs on one node at a time.
 */
import type { Context, ServiceSchema } from "moleculer";
import { callerOf, ROLE_ADMIN, type ChatmeshMeta } from "../../lib/auth";
import { NotFoundError, QuotaExceededError } from "../../lib/errors";
import type { Usage } from "../../lib/chat-protocol";
import { increment } from "../../lib/metrics";
import { runtimeOf } from "../../lib/runtime";
import { QuotaStore, quotaView, type Period, type QuotaView } from "./store";

export interface ReserveParams {
	/** One model call: a generation id, or generation id and step. */
	reservationId: string;
	tokens: number;
}

export interface SettleParams {
	reservationId: string;
	usage: Usage;
}

export interface SettleResult {
	reservationId: string;
	charged: number;
	released: number;
}

interface QuotaSettings {
	/** A reservation this old was left by a stopped node: release it. */
	staleReservationS: number;
}

interface QuotaVars {
	store: QuotaStore;
	resetTimer?: NodeJS.Timeout;
}

interface QuotaMethods {
	runReset(): Promise<number | undefined>;
}

type Ctx<P = Record<string, never>> = Context<P, ChatmeshMeta>;

const usageParams = { type: "object", props: { promptTokens: { type: "number", min: 0 }, completionTokens: { type: "number", min: 0 } } } as const;

const QuotaService: ServiceSchema<QuotaSettings, QuotaMethods & Record<string, never>, QuotaVars> = {
	name: "quota",

	// How often the reset schedule runs is the node's QUOTA_RESET_CHECK_S, read in started(): the
	// schema (and its settings object) is shared by every broker in the process, so nothing per node
	// is written into it.
	settings: {
		staleReservationS: 3600
	},

	actions: {
		/** Holds tokens for one model call, or 429 QUOTA_EXCEEDED with the reset time. */
		reserve: {
			auth: "required",
			visibility: "public",
			params: { reservationId: { type: "string", min: 1, max: 100 }, tokens: { type: "number", integer: true, min: 0, max: 100_000_000 } },
			async handler(ctx: Ctx<ReserveParams>): Promise<QuotaView> {
				const user = callerOf(ctx);
				const { row, granted } = await this.store.reserve(user.id, ctx.params.reservationId, ctx.params.tokens);
				const view = quotaView(row);
				if (!granted) {
					increment(this.broker, "quotaRefusals");
					throw new QuotaExceededError(view.resetAt, { tokensLimit: view.tokensLimit, tokensRemaining: view.tokensRemaining, requested: ctx.params.tokens });
				}
				return view;
			}
		},

		/** Charges what the model really used (prompt + completion) and releases the rest. */
		settle: {
			visibility: "public",
			params: { reservationId: { type: "string", min: 1, max: 100 }, usage: usageParams },
			async handler(ctx: Context<SettleParams>): Promise<SettleResult> {
				const settled = await this.store.settle(ctx.params.reservationId, ctx.params.usage);
				if (!settled) return { reservationId: ctx.params.reservationId, charged: 0, released: 0 };
				return { reservationId: ctx.params.reservationId, charged: settled.charged, released: Math.max(0, settled.reserved - settled.charged) };
			}
		},

		/** The caller's budget (GET /api/usage). */
		get: {
			auth: "required",
			params: {},
			async handler(ctx: Ctx): Promise<QuotaView> {
				return quotaView(await this.store.current(callerOf(ctx).id));
			}
		},

		/** Admin: a user's limit and period (PUT /api/admin/users/:id/quota). */
		setLimit: {
			roles: [ROLE_ADMIN],
			params: {
				id: { type: "uuid" },
				tokensLimit: { type: "number", integer: true, min: 0, max: 1e12, convert: true },
				period: { type: "enum", values: ["day", "week", "month"], optional: true }
			},
			async handler(ctx: Ctx<{ id: string; tokensLimit: number; period?: Period }>): Promise<QuotaView> {
				const row = await this.store.setLimit(ctx.params.id, ctx.params.tokensLimit, ctx.params.period);
				if (!row) throw new NotFoundError("user", ctx.params.id);
				return quotaView(row);
			}
		},

		/** Runs the reset schedule now (it runs by itself every QUOTA_RESET_CHECK_S; useful from the REPL). */
		reset: {
			visibility: "public",
			params: {},
			async handler(): Promise<{ usersReset: number | null }> {
				return { usersReset: (await this.runReset()) ?? null };
			}
		}
	},

	methods: {
		async runReset() {
			try {
				const reset = await this.store.resetDue(this.broker.nodeID, this.settings.staleReservationS);
				if (reset) this.logger.info(`Quota period over for ${reset} user(s): reset`);
				return reset;
			} catch (err) {
				this.logger.warn("Quota reset failed", err);
				return undefined;
			}
		}
	},

	created() {
		const { database, config } = runtimeOf(this.broker);
		if (!database) throw new Error("quota service needs the database");
		this.store = new QuotaStore(database, { tokensLimit: config.quotaDefaultTokens, period: config.quotaPeriod });
		// The refusal series exists from the start (at 0), so rates over it read 0, not nothing.
		increment(this.broker, "quotaRefusals", undefined, 0);
	},

	async started() {
		await this.runReset();
		this.resetTimer = setInterval(() => void this.runReset(), runtimeOf(this.broker).config.quotaResetCheckS * 1000);
		this.resetTimer.unref();
	},

	stopped() {
		clearInterval(this.resetTimer);
	}
};

export default QuotaService;
