/**
 * The quota service's SQL. A reservation raises tokens_reserved only while used + reserved stays
 * within the limit, in one statement whose row lock serialises a user's concurrent requests;
 * settling moves the reservation's real usage to tokens_used and releases the rest, also in one.
 */
import type { Usage } from "../../lib/chat-protocol";
import type { Database } from "../../lib/db";

/** PostgreSQL's unique_violation: a reservation id held already. */
const UNIQUE_VIOLATION = "23505";

export type Period = "day" | "week" | "month";

export interface QuotaRow {
	user_id: string;
	tokens_used: string;
	tokens_reserved: string;
	tokens_limit: string;
	period: Period;
	reset_at: Date;
}

export interface QuotaView {
	tokensUsed: number;
	tokensReserved: number;
	tokensLimit: number;
	tokensRemaining: number;
	period: Period;
	resetAt: string;
}

export function quotaView(row: QuotaRow): QuotaView {
	const used = Number(row.tokens_used);
	const reserved = Number(row.tokens_reserved);
	const limit = Number(row.tokens_limit);
	return {
		tokensUsed: used,
		tokensReserved: reserved,
		tokensLimit: limit,
		tokensRemaining: Math.max(0, limit - used - reserved),
		period: row.period,
		resetAt: row.reset_at.toISOString()
	};
}

/** The start of the next period, in UTC. */
const NEXT_RESET = "date_trunc(period, now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + ('1 ' || period)::interval";
const COLUMNS = "user_id, tokens_used, tokens_reserved, tokens_limit, period, reset_at";

export interface QuotaDefaults {
	tokensLimit: number;
	period: Period;
}

export class QuotaStore {
	constructor(
		private readonly db: Database,
		private readonly defaults: QuotaDefaults
	) {}

	/** The user's row, created with the defaults on first use and reset if its period is over. */
	async current(userId: string): Promise<QuotaRow> {
		await this.db.query(
			`INSERT INTO user_quotas (user_id, tokens_limit, period, reset_at)
			 VALUES ($1, $2, $3::text, date_trunc($3::text, now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + ('1 ' || $3::text)::interval)
			 ON CONFLICT (user_id) DO NOTHING`,
			[userId, this.defaults.tokensLimit, this.defaults.period]
		);
		const [reset] = await this.db.query<QuotaRow>(
			`UPDATE user_quotas SET tokens_used = 0, reset_at = ${NEXT_RESET}, updated_at = now()
			 WHERE user_id = $1 AND reset_at <= now() RETURNING ${COLUMNS}`,
			[userId]
		);
		if (reset) return reset;
		const [row] = await this.db.query<QuotaRow>(`SELECT ${COLUMNS} FROM user_quotas WHERE user_id = $1`, [userId]);
		return row;
	}

	/**
	 * Holds `tokens` for a reservation, or grants nothing when that would pass the limit. One
	 * statement on the hot path: a period that is over counts as reset, the reservation row is
	 * written only when tokens were held, and the row lock serialises a user's concurrent calls.
	 */
	async reserve(userId: string, reservationId: string, tokens: number): Promise<{ row: QuotaRow; granted: boolean }> {
		const held = await this.holdTokens(userId, reservationId, tokens);
		if (held) return { row: held, granted: true };
		// No row yet (a first request), or over the limit: the slow path tells which.
		const row = await this.current(userId);
		const retried = await this.holdTokens(userId, reservationId, tokens);
		return retried ? { row: retried, granted: true } : { row, granted: false };
	}

	/** Undefined when over the limit (or no quota row yet). A reservation id held already is the same hold, granted once. */
	private async holdTokens(userId: string, reservationId: string, tokens: number): Promise<QuotaRow | undefined> {
		const [row] = await this.db
			.query<QuotaRow>({
				name: "quota.hold",
				text: `WITH held AS (
				UPDATE user_quotas SET
					tokens_used = CASE WHEN reset_at <= now() THEN 0 ELSE tokens_used END,
					reset_at = CASE WHEN reset_at <= now() THEN ${NEXT_RESET} ELSE reset_at END,
					tokens_reserved = tokens_reserved + $2,
					updated_at = now()
				WHERE user_id = $1 AND (CASE WHEN reset_at <= now() THEN 0 ELSE tokens_used END) + tokens_reserved + $2 <= tokens_limit
				RETURNING ${COLUMNS}
			), noted AS (
				INSERT INTO quota_reservations (id, user_id, tokens) SELECT $3, user_id, $2 FROM held
			)
			SELECT ${COLUMNS} FROM held`,
				values: [userId, tokens, reservationId]
			})
			.catch(async (err: unknown): Promise<QuotaRow[]> => {
				// Held already (a call made again after its node was lost); the failed statement changed nothing.
				if ((err as { code?: string }).code !== UNIQUE_VIOLATION) throw err;
				return [await this.current(userId)];
			});
		return row;
	}

	/** Charges the real usage and releases the reservation, in one statement; a reservation settles once. */
	async settle(reservationId: string, usage: Usage): Promise<{ charged: number; reserved: number } | undefined> {
		const charged = Math.max(0, usage.promptTokens) + Math.max(0, usage.completionTokens);
		const [row] = await this.db.query<{ tokens: string }>({
			name: "quota.settle",
			text: `WITH released AS (DELETE FROM quota_reservations WHERE id = $1 RETURNING user_id, tokens)
			 UPDATE user_quotas q SET tokens_reserved = greatest(q.tokens_reserved - released.tokens, 0),
			   tokens_used = q.tokens_used + $2, updated_at = now()
			 FROM released WHERE q.user_id = released.user_id
			 RETURNING released.tokens`,
			values: [reservationId, charged]
		});
		return row ? { charged, reserved: Number(row.tokens) } : undefined;
	}

	async setLimit(userId: string, tokensLimit: number, period: Period | undefined): Promise<QuotaRow | undefined> {
		const [exists] = await this.db.query<{ id: string }>("SELECT id FROM users WHERE id = $1", [userId]);
		if (!exists) return undefined;
		await this.current(userId);
		const [row] = await this.db.query<QuotaRow>(
			`UPDATE user_quotas SET tokens_limit = $2, period = coalesce($3, period), updated_at = now() WHERE user_id = $1 RETURNING ${COLUMNS}`,
			[userId, tokensLimit, period ?? null]
		);
		return row;
	}

	/**
	 * The scheduled reset: under a transaction-level advisory lock, so when several nodes run it
	 * at once one does the work and the others skip. Also releases reservations left behind by a
	 * node that stopped before settling them. Returns how many users were reset by this run, or
	 * undefined when another node holds the lock.
	 */
	async resetDue(nodeID: string, staleReservationS: number): Promise<number | undefined> {
		return this.db.transaction(async tx => {
			const [lock] = await tx.query<{ locked: boolean }>("SELECT pg_try_advisory_xact_lock(hashtext('chatmesh:quota-reset')) AS locked");
			if (!lock.locked) return undefined;
			const reset = await tx.query<{ user_id: string }>(
				`UPDATE user_quotas SET tokens_used = 0, reset_at = ${NEXT_RESET}, updated_at = now() WHERE reset_at <= now() RETURNING user_id`
			);
			const stale = await tx.query<{ user_id: string; tokens: string }>(
				`DELETE FROM quota_reservations WHERE created_at < now() - ($1::int * interval '1 second') RETURNING user_id, tokens`,
				[staleReservationS]
			);
			for (const r of stale)
				await tx.query("UPDATE user_quotas SET tokens_reserved = greatest(tokens_reserved - $2, 0) WHERE user_id = $1", [r.user_id, Number(r.tokens)]);
			if (reset.length > 0) await tx.query("INSERT INTO quota_resets (node_id, users_reset) VALUES ($1, $2)", [nodeID, reset.length]);
			return reset.length;
		});
	}
}
