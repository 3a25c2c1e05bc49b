/**
 * What both generation logs do for a subscriber: read its "after seq", and call its callbacks so
 * that one that throws does not break delivery to the others (its error is logged, delivery goes on).
 */
import type { GenerationLogLogger } from "./log";

export function callSubscriber(logger: GenerationLogLogger | undefined, which: "onEvent" | "onEnd" | "onError", call: () => void): void {
	try {
		call();
	} catch (err) {
		logger?.error(`Generation log: a subscriber's ${which} threw`, err);
	}
}

/** A caller's "after seq" as a whole number >= 0 (anything else means from the start). */
export const afterOf = (seq: number): number => (Number.isFinite(seq) && seq > 0 ? Math.floor(seq) : 0);
