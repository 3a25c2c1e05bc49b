/**
 * Text normalisation for the pattern checks, done once per text: trivial disguises (full-width
 * letters, zero-width characters, letter spacing, leetspeak in the words attacks use) must not
 * let a phrase slip past a pattern. The forms are for matching only; nothing here is shown.
 */

export interface NormalizedText {
	/** NFKC, invisible characters removed, lower-case, runs of spaces collapsed (line breaks kept). */
	plain: string;
	/** `plain` with letter-spaced runs joined ("i g n o r e") and leetspeak undone in key words. */
	folded: string;
	/** Text a reader does not see, folded: HTML comments, runs wrapped in invisible characters, Unicode tag text. */
	hidden: string[];
}

// Zero-width and formatting characters, fillers, variation selectors and tag characters: all render as nothing.
const INVISIBLE = new RegExp(
	"[\\u00AD\\u034F\\u061C\\u115F\\u1160\\u17B4\\u17B5\\u180B-\\u180F\\u200B-\\u200F\\u202A-\\u202E\\u2060-\\u206F" +
		"\\u3164\\uFE00-\\uFE0F\\uFEFF\\uFFA0\\u{E0000}-\\u{E007F}\\u{E0100}-\\u{E01EF}]",
	"gu"
);
// The ones with no business around plain text; a run of them may wrap hidden words. (ZWJ and the
// variation selectors are left out: emoji sequences use them.)
const WRAPPER_RUN = /[\u00AD\u180E\u200B\u200C\u200E\u200F\u202A-\u202E\u2060-\u2064\u2066-\u2069\uFEFF\u{E0000}-\u{E007F}]+/u;
const WRAPPER_RUN_G = new RegExp(WRAPPER_RUN.source, "gu");
// Unicode tag characters mirror ASCII invisibly ("ASCII smuggling"); decoded, they are hidden text.
const TAG_RUN = /[\u{E0020}-\u{E007E}]{2,}/gu;
const TAG_CHAR = /[\u{E0020}-\u{E007E}]/gu;
const HTML_COMMENT = /<!--([\s\S]*?)(?:-->|$)/g;

// Exactly one separator between single characters, three or more times: "i g n o r e", "s.y.s.t.e.m".
const LETTER_SPACED = /(?<![\p{L}\p{N}])(?:[\p{L}\p{N}@$][ ._*-]){2,}[\p{L}\p{N}@$](?![\p{L}\p{N}])/gu;
const LETTER_SPACING_SEPARATORS = /[ ._*-]/g;

// A token with a leetspeak character in it ("1gn0r3", "pr3v10us", "$ystem"). The lookbehind pins
// each attempt to a token's start, so the scan stays linear.
const LEET_TOKEN = /(?<![\p{L}\p{N}@$|!])[\p{L}\p{N}@$|!]*?[0-9@$|!][\p{L}\p{N}@$|!]*/gu;
const LEET_CHAR = /[0-9@$|!]/;
const LETTER = /\p{L}/u;
const LEET: Readonly<Record<string, string>> = { "0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a", $: "s", "!": "i" };
// Only these words are un-leeted: undoing leetspeak everywhere would garble ordinary numbers and codes.
const KEY_WORDS: ReadonlySet<string> = new Set(
	(
		"ignore ignoring disregard forget forgot override bypass previous prior above earlier all any every the your you are now " +
		"instruction instructions rule rules system prompt prompts guidelines restrictions developer mode dan jailbreak jailbroken " +
		"act as pretend assistant new reveal print show tell repeat output everything told unrestricted unfiltered uncensored"
	).split(" ")
);

const MAX_KEY_WORD_CHARS = 24;

function undoLeet(token: string): string {
	// Key words are short; a long run of letters and digits is an id or a hash.
	if (token.length > MAX_KEY_WORD_CHARS) return token;
	// A trailing "!" is punctuation ("now!"), not an "i".
	const core = token.replace(/!+$/, "");
	if (!LETTER.test(core)) return token;
	const base = core.replace(/[0-9@$!]/g, c => LEET[c] ?? c);
	// "1" and "|" stand for "i" or "l": whichever makes a key word.
	for (const stand of ["i", "l"]) {
		const candidate = base.replace(/[1|]/g, stand);
		if (KEY_WORDS.has(candidate)) return candidate + token.slice(core.length);
	}
	return token;
}

// Runs of two or more spaces, or any other horizontal whitespace: single spaces are left alone (they are most of them).
const SPACE_RUN = /(?: [^\S\n]+|[^\S\n ][^\S\n]*)/g;
const collapseSpaces = (text: string): string =>
	text
		.replace(SPACE_RUN, " ")
		.replace(/ ?\n\s*/g, "\n")
		.trim();

/** The folded form; `plain` when there was nothing to fold. */
function fold(lowered: string, plain: string): string {
	const joined = lowered.replace(LETTER_SPACED, run => run.replace(LETTER_SPACING_SEPARATORS, ""));
	const unleeted = LEET_CHAR.test(joined) ? joined.replace(LEET_TOKEN, undoLeet) : joined;
	return unleeted === lowered ? plain : collapseSpaces(unleeted);
}

// Typographic apostrophes become plain ones, so "you’re" meets the patterns' "you're".
const lower = (text: string): string =>
	text
		.normalize("NFKC")
		.replace(INVISIBLE, "")
		.replace(/[\u2018\u2019\u02BC]/g, "'")
		.toLowerCase();

/** The hidden parts of a text, before folding. */
function hiddenParts(text: string): string[] {
	const parts: string[] = [];
	for (const match of text.matchAll(TAG_RUN)) parts.push(match[0].replace(TAG_CHAR, c => String.fromCharCode((c.codePointAt(0) ?? 0) - 0xe0000)));
	for (const match of text.matchAll(HTML_COMMENT)) if (match[1]?.trim()) parts.push(match[1]);
	if (WRAPPER_RUN.test(text)) {
		// Pieces between two runs of invisible characters were wrapped by them.
		const pieces = text.split(WRAPPER_RUN_G);
		const inner = pieces.slice(1, -1).filter(piece => piece.trim().length > 0);
		// Letters interleaved with invisibles ("i\u200Bg\u200Bn…") are one hidden word, not many.
		if (inner.length > 0) parts.push(inner.every(piece => piece.length <= 2) ? inner.join("") : inner.join(" "));
	}
	return parts;
}

export function normalize(text: string): NormalizedText {
	const lowered = lower(text);
	const plain = collapseSpaces(lowered);
	return {
		plain,
		folded: fold(lowered, plain),
		hidden: hiddenParts(text).map(part => {
			const lowered = lower(part);
			return fold(lowered, collapseSpaces(lowered));
		})
	};
}
