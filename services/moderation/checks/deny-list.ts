/**
 * The operator's deny list (MODERATION_DENY_LIST): words and phrases blocked in every direction.
 * Matching is case-insensitive on the normalised text; a term starting or ending with a letter or
 * digit must start or end at a word boundary there, so "ass" never matches "class". The folded
 * form is checked too, so "b a d w o r d" and zero-width-split terms are caught.
 */
import type { CheckContext, CheckVerdict, Direction, ModerationCheck } from "./check";
import { allow } from "./check";

const WORD_CHAR = /[\p{L}\p{N}_]/u;
const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** One regex for the whole list; terms are already lower-cased with single spaces (lib/config.ts). */
function denyListPattern(terms: readonly string[]): RegExp | undefined {
	if (terms.length === 0) return undefined;
	const alternatives = terms.map(term => {
		const body = escapeRegExp(term).replace(/ /g, "\\s+");
		const start = WORD_CHAR.test(term.charAt(0)) ? "(?<![\\p{L}\\p{N}_])" : "";
		const end = WORD_CHAR.test(term.charAt(term.length - 1)) ? "(?![\\p{L}\\p{N}_])" : "";
		return `${start}${body}${end}`;
	});
	return new RegExp(alternatives.join("|"), "u");
}

export function denyListCheck(terms: readonly string[]): ModerationCheck {
	const name = "deny_list";
	const pattern = denyListPattern(terms.map(term => term.normalize("NFKC").toLowerCase().replace(/\s+/g, " ").trim()));
	return {
		name,
		appliesTo: ["input", "output", "tool"] satisfies Direction[],
		async run(_text: string, _direction: Direction, ctx: CheckContext): Promise<CheckVerdict> {
			if (!pattern) return allow(name);
			const { plain, folded } = ctx.normalized;
			if (!pattern.test(plain) && !pattern.test(folded)) return allow(name);
			// The term itself stays out of the reason: output verdicts may reach the user.
			return { check: name, action: "block", categories: ["deny_list"], reasons: ["deny_list: contains a denied term"] };
		}
	};
}
