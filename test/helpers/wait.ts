/** Waiting on a condition instead of a fixed sleep: polls until it holds or the time is up. */
export interface WaitOptions {
	timeoutMs?: number;
	intervalMs?: number;
	/** Names the condition in the timeout error. */
	what?: string;
}

/** Resolves with the condition's first truthy value; a throwing probe counts as "not yet". */
export async function waitFor<T>(condition: () => T | Promise<T>, opts: WaitOptions = {}): Promise<NonNullable<T>> {
	const { timeoutMs = 10_000, intervalMs = 50, what = "condition" } = opts;
	const start = Date.now();
	for (;;) {
		let value: T | undefined;
		try {
			value = await condition();
		} catch {
			// Not ready yet (a node still starting, a row not written): poll again.
			value = undefined;
		}
		if (value) return value as NonNullable<T>;
		if (Date.now() - start > timeoutMs) throw new Error(`${what} not met within ${timeoutMs} ms`);
		await sleep(intervalMs);
	}
}

/** Only for tests about time itself passing (a token expiring, a window closing); everything else waits on a condition. */
export const sleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms));
