/**
 * The contract every moderation check implements, in the spirit of a guardrail plugin: a check
 * sees one text and its direction and answers the same verdict shape as the service itself, so
 * adding a check is adding a module to the list in ./index.ts.
 */
import type { Logger } from "moleculer";
import type { NormalizedText } from "../normalize";

/** Where a text is going: a user's message, the model's answer, or a tool's result fed back to the model. */
export type Direction = "input" | "output" | "tool";
export const DIRECTIONS: readonly Direction[] = ["input", "output", "tool"];

export type ModerationAction = "allow" | "flag" | "block";

/** One check's answer. */
export interface CheckVerdict {
	check: string;
	action: ModerationAction;
	categories: string[];
	reasons: string[];
}

/** The service's answer: the most severe action of the checks that ran, and what each said. */
export interface ModerationVerdict {
	action: ModerationAction;
	categories: string[];
	reasons: string[];
	checks: CheckVerdict[];
}

/** What the service prepares once per text and hands to every check. */
export interface CheckContext {
	normalized: NormalizedText;
	logger: Logger;
}

export interface ModerationCheck {
	readonly name: string;
	/** The directions this check judges; it is not run for the others. */
	readonly appliesTo: readonly Direction[];
	run(text: string, direction: Direction, ctx: CheckContext): Promise<CheckVerdict>;
}

const SEVERITY: Readonly<Record<ModerationAction, number>> = { allow: 0, flag: 1, block: 2 };

export function mostSevere(a: ModerationAction, b: ModerationAction): ModerationAction {
	return SEVERITY[b] > SEVERITY[a] ? b : a;
}

export function allow(check: string, reasons: string[] = []): CheckVerdict {
	return { check, action: "allow", categories: [], reasons };
}

/** The overall verdict: the most severe action, categories and reasons in check order without repeats. */
export function combine(verdicts: CheckVerdict[]): ModerationVerdict {
	let action: ModerationAction = "allow";
	const categories = new Set<string>();
	const reasons: string[] = [];
	for (const verdict of verdicts) {
		action = mostSevere(action, verdict.action);
		for (const category of verdict.categories) categories.add(category);
		reasons.push(...verdict.reasons);
	}
	return { action, categories: [...categories], reasons, checks: verdicts };
}
