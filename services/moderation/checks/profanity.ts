/**
 * Profanity and abuse, through obscenity's English dataset (which sees through leetspeak,
 * look-alike characters and stretched letters, and knows "assessment" from "ass").
 *
 * The split, for a general-purpose chat product where adults swear and ask medical questions:
 * - block "hate": slurs with no ordinary use (the n-word, "kike", "chingchong", …);
 * - block "harassment": an insult or slur aimed at the reader ("you stupid bitch", "fuck you",
 *   "kill yourself");
 * - flag "hate": slurs with other uses too ("fag" is a cigarette in Britain, "retard" a verb,
 *   "negro" Spanish and historical);
 * - flag "profanity" (swearing) and "sexual" (explicit slang): the turn records them, nothing stops;
 * - ignored: clinical and anatomical words ("penis", "sex", "rape", "incest"), which people need
 *   for health, news and safety questions; the provider check judges their context.
 */
import {
	DataSet,
	englishDataset,
	englishRecommendedBlacklistMatcherTransformers,
	englishRecommendedTransformers,
	RegExpMatcher,
	type EnglishProfaneWord
} from "obscenity";
import type { CheckContext, CheckVerdict, Direction, ModerationAction, ModerationCheck } from "./check";
import { allow, mostSevere } from "./check";

/** A dataset word's verdict; `insult` words aimed at "you" are harassment and block. */
export type ProfanityRule = { action: ModerationAction; category: "hate" | "profanity" | "sexual"; insult: boolean } | "ignore";

const block = (): ProfanityRule => ({ action: "block", category: "hate", insult: true });
const slur = (): ProfanityRule => ({ action: "flag", category: "hate", insult: true });
const swear = (insult = false): ProfanityRule => ({ action: "flag", category: "profanity", insult });
const sexual = (): ProfanityRule => ({ action: "flag", category: "sexual", insult: false });

// Every word of the dataset, by type: a new word in an obscenity update fails the type check here.
const RULES: Readonly<Record<EnglishProfaneWord, ProfanityRule>> = {
	abeed: block(),
	africoon: block(),
	arabush: block(),
	boonga: block(),
	chingchong: block(),
	kike: block(),
	nigger: block(),
	abo: slur(),
	chink: slur(),
	dyke: slur(),
	fag: slur(),
	negro: slur(),
	retard: slur(),
	spastic: slur(),
	tranny: slur(),
	arse: swear(true),
	ass: swear(true),
	bastard: swear(true),
	bitch: swear(true),
	bollocks: swear(),
	cuck: swear(true),
	cunt: swear(true),
	dick: swear(true),
	fuck: swear(),
	piss: swear(),
	prick: swear(true),
	shit: swear(),
	slut: swear(true),
	turd: swear(true),
	twat: swear(true),
	wank: swear(true),
	whore: swear(true),
	blowjob: sexual(),
	boob: sexual(),
	buttplug: sexual(),
	cock: sexual(),
	cum: sexual(),
	deepthroat: sexual(),
	dildo: sexual(),
	doggystyle: sexual(),
	"double penetration": sexual(),
	felch: sexual(),
	"finger bang": sexual(),
	fisting: sexual(),
	gangbang: sexual(),
	handjob: sexual(),
	hentai: sexual(),
	hooker: sexual(),
	"jerk off": sexual(),
	jizz: sexual(),
	lubejob: sexual(),
	orgy: sexual(),
	porn: sexual(),
	pussy: sexual(),
	tit: sexual(),
	anal: "ignore",
	anus: "ignore",
	bestiality: "ignore",
	ejaculate: "ignore",
	fellatio: "ignore",
	incest: "ignore",
	masturbate: "ignore",
	orgasm: "ignore",
	penis: "ignore",
	rape: "ignore",
	scat: "ignore",
	semen: "ignore",
	sex: "ignore",
	vagina: "ignore"
};

// Ordinary phrases the dataset would otherwise catch.
const EXTRA_WHITELIST = [
	"cum laude",
	"chink in the armor",
	"chink in the armour",
	"chink in his armor",
	"chink in her armor",
	"chink in their armor",
	"retardant",
	"retardation",
	"abo blood",
	"abo group",
	"abo incompat",
	"abo system",
	"abo typ",
	"dick van dyke",
	"moby dick",
	"negro league",
	"rio negro",
	"fag end"
];

// An insult aimed at the reader: "you bitch", "you're a stupid twat", "u r such a dick".
const INSULT_MODIFIERS =
	"such|so|a|an|the|one|total|complete|absolute|utter|fucking|fuckin|freaking|stupid|dumb|little|big|fat|ugly|worthless|" +
	"pathetic|damn|dirty|lazy|useless|piece\\s+of";
const AIMED_BEFORE = new RegExp(`(?:^|[^\\p{L}])(?:you|u|ya)(?:\\s*(?:'re|re)|\\s+(?:are|r))?(?:\\s+(?:${INSULT_MODIFIERS}))*\\s+$`, "u");
// A curse aimed at the reader: "fuck you", "fucking off", "go fuck yourself".
const AIMED_AFTER = /^[\p{L}]*\s+(?:you|u|ya|yourself|urself|off)(?!\p{L})/u;
const SELF_HARM_INCITEMENT =
	/(?<!\p{L})(?:(?:go|just|should|pls|plz|please|better|gonna|ought to|need to)\s+(?:go\s+)?kill\s+(?:your\s*self|urself)|kys)(?!\p{L})/u;

type Judged = Exclude<ProfanityRule, "ignore"> & { word: EnglishProfaneWord };

interface Matcher {
	/** The dataset without its whitelist: a quicker first pass whose "no match" is final. */
	quick: RegExpMatcher;
	matcher: RegExpMatcher;
	/** Each blacklisted term's word and rule, by term id. */
	terms: Map<number, Judged>;
}

function buildMatcher(): Matcher {
	const dataset = new DataSet<{ originalWord: EnglishProfaneWord }>()
		.addAll(englishDataset)
		.removePhrasesIf(phrase => phrase.metadata !== undefined && RULES[phrase.metadata.originalWord] === "ignore");
	const built = dataset.build();
	const matcher = new RegExpMatcher({
		...built,
		...englishRecommendedTransformers,
		whitelistedTerms: [...(built.whitelistedTerms ?? []), ...EXTRA_WHITELIST]
	});
	const terms = new Map<number, Judged>();
	for (const term of built.blacklistedTerms) {
		const word = dataset.getPayloadWithPhraseMetadata({ termId: term.id, startIndex: 0, endIndex: 0, matchLength: 0 }).phraseMetadata?.originalWord;
		const rule = word === undefined ? "ignore" : RULES[word];
		if (word !== undefined && rule !== "ignore") terms.set(term.id, { ...rule, word });
	}
	const quick = new RegExpMatcher({ blacklistedTerms: built.blacklistedTerms, blacklistMatcherTransformers: englishRecommendedBlacklistMatcherTransformers });
	return { quick, matcher, terms };
}

function reasonOf(rule: Judged): string {
	if (rule.category === "hate") return rule.action === "block" ? "hate: slur" : "hate: possible slur";
	return rule.category === "sexual" ? "sexual: explicit language" : "profanity: profane language";
}

export function profanityCheck(): ModerationCheck {
	const name = "profanity";
	// Built once: compiling the dataset's patterns is the expensive part.
	const { quick, matcher, terms } = buildMatcher();
	return {
		name,
		appliesTo: ["input", "output", "tool"] satisfies Direction[],
		async run(_text: string, _direction: Direction, ctx: CheckContext): Promise<CheckVerdict> {
			// The normalised text: zero-width-split and full-width words are whole again.
			const text = ctx.normalized.plain;
			let action: ModerationAction = "allow";
			const categories = new Set<string>();
			const reasons = new Set<string>();
			const add = (verdict: ModerationAction, category: string, reason: string) => {
				action = mostSevere(action, verdict);
				categories.add(category);
				reasons.add(reason);
			};
			// Most texts are clean, and the whitelist only ever removes matches.
			const matches = quick.hasMatch(text) ? matcher.getAllMatches(text) : [];
			for (const match of matches) {
				const rule = terms.get(match.termId);
				if (!rule) continue;
				const before = text.slice(Math.max(0, match.startIndex - 48), match.startIndex);
				const after = text.slice(match.endIndex + 1, match.endIndex + 24);
				const aimed = (rule.insult && AIMED_BEFORE.test(before)) || (rule.word === "fuck" && AIMED_AFTER.test(after));
				if (aimed) add("block", "harassment", "harassment: abusive language aimed at a person");
				else add(rule.action, rule.category, reasonOf(rule));
			}
			if (SELF_HARM_INCITEMENT.test(text)) add("block", "harassment", "harassment: incitement to self-harm");
			if (action === "allow") return allow(name);
			return { check: name, action, categories: [...categories], reasons: [...reasons] };
		}
	};
}

/** The check's rule for a dataset word (for tests and documentation). */
export function profanityRule(word: EnglishProfaneWord): ProfanityRule {
	return RULES[word];
}
