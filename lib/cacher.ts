/**
 * The Redis cacher, with reads and writes that give way while Redis is down: a read is a miss
 * (the action runs and reads its own store) and a write is skipped, logged once per outage.
 * Deletes still fail loudly: a revocation or a write must not answer as if its stale cache entry
 * were gone.
 */
import { Cachers } from "moleculer";

export class ResilientRedisCacher extends Cachers.Redis {
	private outage = false;

	override get(key: string): Promise<Record<string, unknown> | null> {
		return super.get(key).then(this.answered, err => this.missed(err, this.miss()));
	}

	override getWithTTL(key: string): Promise<Record<string, unknown> | null> {
		// The lock-mode middleware reads `{ data, ttl }` from this one.
		return super.getWithTTL(key).then(this.answered, err => this.missed(err, { data: this.miss(), ttl: null }));
	}

	override set(key: string, data: unknown, ttl?: number): Promise<void> {
		return super.set(key, data, ttl).then(this.answered, err => this.missed(err, undefined));
	}

	/** What the cacher middleware takes for "not cached" (the configured missingResponse). */
	private miss(): Record<string, unknown> | null {
		return (this.opts as { missingResponse?: Record<string, unknown> | null }).missingResponse as Record<string, unknown> | null;
	}

	private readonly answered = <T>(value: T): T => {
		this.outage = false;
		return value;
	};

	private missed<T>(err: unknown, value: T): T {
		if (!this.outage) this.logger.warn("Cache unavailable: reading through to the stores until it answers", { err: (err as Error).message });
		this.outage = true;
		return value;
	}
}
