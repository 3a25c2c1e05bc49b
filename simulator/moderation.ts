/**
 * Deterministic moderation: an input is flagged (as harassment) when it contains one of the
 * configured words, case-insensitively. Scores of the other categories are small stable values.
 */
import { contentText, hashString } from "./text";

const MODERATION_CATEGORIES = [
	"harassment",
	"harassment/threatening",
	"hate",
	"hate/threatening",
	"illicit",
	"illicit/violent",
	"self-harm",
	"self-harm/intent",
	"self-harm/instructions",
	"sexual",
	"sexual/minors",
	"violence",
	"violence/graphic"
] as const;

export type ModerationCategory = (typeof MODERATION_CATEGORIES)[number];

export interface ModerationResult {
	flagged: boolean;
	categories: Record<ModerationCategory, boolean>;
	category_scores: Record<ModerationCategory, number>;
	category_applied_input_types: Record<ModerationCategory, string[]>;
}

/**
 * The texts of a moderation `input`: a string, an array of strings, or an array of multimodal
 * parts (`{type:"text", text}` parts are joined into one input; others are ignored).
 */
export function moderationInputs(input: unknown): string[] | undefined {
	if (typeof input === "string") return [input];
	if (!Array.isArray(input) || input.length === 0) return undefined;
	if (input.every(v => typeof v === "string")) return input as string[];
	if (input.every(v => typeof v === "object" && v !== null && !Array.isArray(v))) return [contentText(input)];
	return undefined;
}

export function moderate(text: string, flaggedWords: readonly string[]): ModerationResult {
	const lower = text.toLowerCase();
	const flagged = flaggedWords.some(word => word.length > 0 && lower.includes(word.toLowerCase()));
	const seed = hashString(text, 0x30d);
	const categories = {} as Record<ModerationCategory, boolean>;
	const scores = {} as Record<ModerationCategory, number>;
	const applied = {} as Record<ModerationCategory, string[]>;
	MODERATION_CATEGORIES.forEach((category, i) => {
		const hit = flagged && category === "harassment";
		categories[category] = hit;
		// A stable score in [0.00001, 0.01) for clean categories.
		const small = (((seed + i * 0x9e3779b1) >>> 0) % 9990) / 1_000_000 + 0.00001;
		scores[category] = hit ? 0.9731 : Number(small.toFixed(6));
		applied[category] = ["text"];
	});
	return { flagged, categories, category_scores: scores, category_applied_input_types: applied };
}
