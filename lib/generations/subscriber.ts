/**
 * Calling a subscriber's callback from either generation log: a callback that throws must not
 * break delivery to the others, so its error is logged and delivery goes on.
 */
import type { GenerationLogLogger } from "./log";

export function callSubscriber(logger: GenerationLogLogger | undefined, which: "onEvent" | "onEnd" | "onError", call: () => void): void {
	try {
		call();
	} catch (err) {
		logger?.error(`Generation log: a subscriber's ${which} threw`, err);
	}
}
