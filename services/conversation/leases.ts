/**
 * Ownership of running turns by lease, not by node id. Each conversation service instance (one
 * per process start: a node that comes back under the same NODE_ID is a new owner) keeps a row in
 * `turn_leases` alive; every turn it starts names it. When the lease runs out, the answers still
 * `streaming` under it have no one to finish them, and a live node does (see orphans.ts).
 */
import type { Database } from "../../lib/db";

export interface LeaseSettings {
	/** How long a lease holds without renewal. */
	ttlMs: number;
	/** How often the owner renews it (well under ttlMs, so a slow renewal does not lose it). */
	renewMs: number;
}

export interface LeaseLogger {
	warn(...args: unknown[]): void;
	info(...args: unknown[]): void;
}

export class TurnLeases {
	private timer?: NodeJS.Timeout;
	/** Logged the current failure already: once per outage, not per renewal. */
	private failing = false;

	constructor(
		private readonly db: Database,
		/** This process's owner id (the broker's instance id). */
		readonly instanceId: string,
		private readonly nodeId: string,
		private readonly settings: LeaseSettings,
		private readonly logger: LeaseLogger
	) {}

	/** Takes the lease and keeps renewing it until stop(). */
	async start(): Promise<void> {
		await this.renew();
		this.timer = setInterval(() => void this.renew(), this.settings.renewMs);
		this.timer.unref();
	}

	/**
	 * Renews the lease. A failure (the database is away) is logged once per outage: the lease
	 * holds for ttlMs, longer than a short outage, and the next renewal takes it up again.
	 */
	async renew(): Promise<void> {
		try {
			await this.db.query({
				name: "lease.renew",
				text: `INSERT INTO turn_leases (instance_id, node_id, lease_until) VALUES ($1, $2, now() + $3 * interval '1 millisecond')
				 ON CONFLICT (instance_id) DO UPDATE SET lease_until = EXCLUDED.lease_until, node_id = EXCLUDED.node_id`,
				values: [this.instanceId, this.nodeId, this.settings.ttlMs]
			});
			if (this.failing) this.logger.info("Turn lease renewed again after failures");
			this.failing = false;
		} catch (err) {
			if (!this.failing) this.logger.warn("Turn lease could not be renewed; it holds until it runs out", err);
			this.failing = true;
		}
	}

	/** Gives the lease up: after the node's own turns have ended, so nothing of ours is left to sweep. */
	async stop(): Promise<void> {
		clearInterval(this.timer);
		await this.db
			.query("DELETE FROM turn_leases WHERE instance_id = $1", [this.instanceId])
			.catch((err: unknown) => this.logger.warn("Turn lease could not be given up; it runs out by itself", err));
	}

	/** Leases run out long ago are dropped (their orphans were swept by then). */
	async pruneExpired(olderThanMs: number): Promise<void> {
		await this.db.query("DELETE FROM turn_leases WHERE lease_until < now() - $1 * interval '1 millisecond'", [olderThanMs]);
	}
}
