/**
 * The GPU pool's concurrency for whole generations. Moleculer's bulkhead counts an action as
 * in flight only until its handler returns, and `llm.stream` returns at the first token while
 * the answer is still being generated; so the bulkhead bounds how many requests wait for a
 * first token, and this gate bounds how many generations run on the node, start to end.
 * Waiters are served first come, first served.
 */
export class ConcurrencyGate {
	private running = 0;
	private readonly waiters: Array<() => void> = [];

	constructor(private readonly concurrency: number) {}

	get active(): number {
		return this.running;
	}

	get waiting(): number {
		return this.waiters.length;
	}

	/**
	 * Resolves with a release function once a slot is free, or with null when `signal` aborts
	 * first (the generation was stopped while it waited).
	 */
	acquire(signal: AbortSignal): Promise<(() => void) | null> {
		if (signal.aborted) return Promise.resolve(null);
		if (this.running < this.concurrency) {
			this.running += 1;
			return Promise.resolve(this.releaser());
		}
		return new Promise(resolve => {
			const onAbort = () => {
				const index = this.waiters.indexOf(grant);
				if (index >= 0) this.waiters.splice(index, 1);
				resolve(null);
			};
			const grant = () => {
				signal.removeEventListener("abort", onAbort);
				this.running += 1;
				resolve(this.releaser());
			};
			this.waiters.push(grant);
			signal.addEventListener("abort", onAbort, { once: true });
		});
	}

	private releaser(): () => void {
		let released = false;
		return () => {
			if (released) return;
			released = true;
			this.running -= 1;
			this.waiters.shift()?.();
		};
	}
}
