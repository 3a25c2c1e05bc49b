/**
 * A small circuit breaker per provider, per llm node: after `failureThreshold` consecutive
 * provider faults it opens and the provider is skipped for `openMs`; then it lets one probe
 * request through (half-open). The probe's success closes it, its failure opens it again.
 * Moleculer's own breaker watches whole actions on the calling side and cannot tell providers
 * apart, so the fallback chain keeps this one.
 */

export interface BreakerSettings {
	/** Consecutive provider faults that open the breaker. */
	failureThreshold: number;
	/** How long an open breaker skips its provider before a half-open probe. */
	openMs: number;
}

export const BREAKER_STATES = ["closed", "open", "half-open"] as const;
export type BreakerState = (typeof BREAKER_STATES)[number];

export class CircuitBreaker {
	private current: BreakerState = "closed";
	private failures = 0;
	private openedAt = 0;
	private probing = false;

	constructor(
		private readonly settings: BreakerSettings,
		private readonly now: () => number = Date.now
	) {}

	get state(): BreakerState {
		if (this.current === "open" && this.now() - this.openedAt >= this.settings.openMs) return "half-open";
		return this.current;
	}

	/**
	 * May a request go to the provider now? Closed: yes. Open: no, until `openMs` has passed.
	 * Half-open: yes for one request at a time (the probe), which must then report success(),
	 * failure() or release().
	 */
	tryAcquire(): boolean {
		const state = this.state;
		if (state === "closed") return true;
		if (state === "open") return false;
		this.current = "half-open";
		if (this.probing) return false;
		this.probing = true;
		return true;
	}

	/** The provider answered (first token, or a refusal that proves it alive). */
	success(): void {
		this.current = "closed";
		this.failures = 0;
		this.probing = false;
	}

	/** A provider fault. Returns true when this failure opened the breaker. */
	failure(): boolean {
		const wasProbe = this.current === "half-open";
		this.probing = false;
		this.failures += 1;
		if (wasProbe || (this.current === "closed" && this.failures >= this.settings.failureThreshold)) {
			this.current = "open";
			this.openedAt = this.now();
			return true;
		}
		return false;
	}

	/** The request ended without telling anything about the provider (cancelled before an answer). */
	release(): void {
		this.probing = false;
	}
}
