/**
 * Deterministic text for the simulator: string hashing, a tiny seeded generator, the word list
 * answers are made of, message text extraction and prompt token counting.
 *
 * Everything here is cheap per token: a word is one table lookup, and prompt counting is cached.
 */
import { encode } from "gpt-tokenizer";

// ---------------------------------------------------------------------------------------------
// Hashing and pseudo-random numbers
// ---------------------------------------------------------------------------------------------

/**
 * A fast non-cryptographic 53-bit string hash: two independently multiplied 32-bit lanes over
 * the UTF-16 code units, each finished with an avalanche step. Stable across runs and platforms.
 */
export function hashString(text: string, seed = 0): number {
	let a = (0x811c9dc5 ^ seed) >>> 0;
	let b = (0x27d4eb2f ^ Math.imul(seed, 0x9e3779b1)) >>> 0;
	for (let i = 0; i < text.length; i++) {
		const c = text.charCodeAt(i);
		a = Math.imul(a ^ c, 0x01000193);
		b = Math.imul(b ^ c, 0x5bd1e995);
		b ^= b >>> 15;
	}
	a ^= a >>> 16;
	a = Math.imul(a, 0x85ebca6b);
	a ^= a >>> 13;
	a = Math.imul(a, 0xc2b2ae35);
	a ^= a >>> 16;
	b ^= b >>> 13;
	b = Math.imul(b, 0x27d4eb2d);
	b ^= b >>> 15;
	return (b & 0x1fffff) * 0x100000000 + (a >>> 0);
}

/** xorshift32: a few integer ops per draw; the seed is folded to a non-zero 32-bit state. */
export class SeededRandom {
	private state: number;

	constructor(seed: number) {
		const folded = (seed ^ Math.floor(seed / 0x100000000)) >>> 0;
		this.state = folded === 0 ? 0x6d2b79f5 : folded;
	}

	/** Next unsigned 32-bit integer. */
	nextUint32(): number {
		let x = this.state;
		x ^= x << 13;
		x ^= x >>> 17;
		x ^= x << 5;
		this.state = x >>> 0;
		return this.state;
	}

	/** Uniform in [0, 1). */
	nextFloat(): number {
		return this.nextUint32() / 0x100000000;
	}
}

// ---------------------------------------------------------------------------------------------
// Words and token sources
// ---------------------------------------------------------------------------------------------

/** Plausible lowercase English words answers are drawn from. */
const WORDS: readonly string[] = Object.freeze(
	(
		"the a an of to and in that is for it with as on be at by this from or have not are was " +
		"but we can will which one all would there their what so if about when more also other " +
		"into some could time these two may then first any like now only its over new way well " +
		"most after where use used make made many before must through back years much good " +
		"system model answer question data value result example simple method process number " +
		"part point case fact group problem service request response message context detail " +
		"people world place day week work project team idea plan step order level area model " +
		"change start end form line list table field note report review test check state " +
		"clear quick small large short long early late next last real common useful likely " +
		"often usually always sometimes simply quite very rather really still already almost " +
		"write read show find give take keep help build run call send move turn hold bring " +
		"consider suggest explain describe compare improve handle support provide include " +
		"because although while since unless however therefore instead perhaps indeed overall " +
		"light water river mountain city garden market window paper music story color sound " +
		"careful steady gentle bright quiet modern simple basic general specific certain " +
		"approach pattern structure balance option choice reason source signal measure"
	)
		.split(" ")
		.filter((w, i, all) => w.length > 0 && all.indexOf(w) === i)
);

/**
 * Splits text into word tokens the way the simulator streams them: each token is a run of
 * whitespace followed by non-whitespace, so concatenating the tokens gives the text back
 * (trailing whitespace rides on the last token; whitespace-only text gives no tokens).
 */
export function splitWordTokens(text: string): string[] {
	const tokens = text.match(/\s*\S+/g);
	if (!tokens) return [];
	const tail = /\s+$/.exec(text);
	if (tail) tokens[tokens.length - 1] += tail[0];
	return tokens;
}

/**
 * The answer's tokens, produced one at a time: a fixed prefix (echo, tool results) followed by
 * `generated` seeded words. The first token of the answer has no leading space, the rest do.
 */
export class TokenSource {
	private readonly random: SeededRandom;
	private emitted = 0;

	constructor(
		private readonly prefix: readonly string[],
		seed: number,
		/** Total tokens the source can produce (prefix + generated words). */
		readonly total: number
	) {
		this.random = new SeededRandom(seed);
	}

	next(): string {
		const i = this.emitted++;
		if (i < this.prefix.length) return this.prefix[i] as string;
		const word = WORDS[this.random.nextUint32() % WORDS.length] as string;
		return i === 0 ? word : ` ${word}`;
	}

	/** The first `count` tokens joined (for non-stream answers). */
	take(count: number): string {
		let text = "";
		for (let i = 0; i < count; i++) text += this.next();
		return text;
	}
}

// ---------------------------------------------------------------------------------------------
// Message text
// ---------------------------------------------------------------------------------------------

function isRecord(value: unknown): value is Record<string, unknown> {
	return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The text of a message `content`: a string as is, an array of parts as its text parts joined
 * by newlines, null/absent as "", anything else as JSON. Never throws.
 */
export function contentText(content: unknown): string {
	if (typeof content === "string") return content;
	if (content === null || content === undefined) return "";
	if (Array.isArray(content)) {
		const parts: string[] = [];
		for (const part of content) {
			if (typeof part === "string") parts.push(part);
			else if (isRecord(part) && typeof part.text === "string") parts.push(part.text);
			else if (isRecord(part) && typeof part.refusal === "string") parts.push(part.refusal);
		}
		return parts.join("\n");
	}
	if (typeof content === "number" || typeof content === "boolean") return String(content);
	try {
		return JSON.stringify(content) ?? "";
	} catch {
		return "";
	}
}

/** The text of an assistant message's tool calls (names and argument strings). */
function toolCallsText(toolCalls: unknown): string {
	if (!Array.isArray(toolCalls)) return "";
	let text = "";
	for (const call of toolCalls) {
		if (!isRecord(call) || !isRecord(call.function)) continue;
		const fn = call.function;
		if (typeof fn.name === "string") text += fn.name;
		if (typeof fn.arguments === "string") text += fn.arguments;
	}
	return text;
}

/**
 * A canonical string for a message list, independent of JSON key order, used to seed answers:
 * role, name, content text, tool calls and tool_call_id of each message.
 */
export function canonicalMessages(messages: readonly unknown[]): string {
	let out = "";
	for (const message of messages) {
		if (!isRecord(message)) {
			out += `?${contentText(message)}\u0002`;
			continue;
		}
		out += `${typeof message.role === "string" ? message.role : ""}\u0001`;
		out += `${typeof message.name === "string" ? message.name : ""}\u0001`;
		out += `${contentText(message.content)}\u0001`;
		out += `${toolCallsText(message.tool_calls)}\u0001`;
		out += `${typeof message.tool_call_id === "string" ? message.tool_call_id : ""}\u0002`;
	}
	return out;
}

// ---------------------------------------------------------------------------------------------
// Token counting
// ---------------------------------------------------------------------------------------------

/**
 * Fixed per-message overhead added to each message's content tokens: the chat format wraps
 * every message in a start marker, the role, a separator and an end marker (4 tokens in the
 * ChatML layout OpenAI's counting guide describes). Tool definitions are not counted.
 */
const PROMPT_TOKENS_PER_MESSAGE = 3;
/** Tokens that prime the reply, once per request. */
const PROMPT_REPLY_PRIMING_TOKENS = 3;

/**
 * Longest piece handed to the BPE encoder in one call. gpt-tokenizer's merge step is quadratic
 * in the length of a single pre-token, so a prompt holding 100k spaces or emoji would block the
 * event loop for seconds. Text is cut into pieces of at most this length, at a "space before a
 * word" boundary when there is one (where the pre-tokenizer splits anyway, so ordinary prose
 * counts exactly), else hard (long runs of one character class: off by a token or two per piece).
 */
const MAX_ENCODE_PIECE = 512;

const ENCODE_OPTIONS = { disallowedSpecial: new Set<string>() } as const;

function isSpace(code: number): boolean {
	return code === 32 || code === 9 || code === 10 || code === 13 || code === 11 || code === 12 || code === 0xa0;
}

function encodeLength(text: string): number {
	// Special-token strings such as "<|endoftext|>" are counted as plain text, never rejected.
	return encode(text, ENCODE_OPTIONS).length;
}

function countUncached(text: string): number {
	if (text.length <= MAX_ENCODE_PIECE) return encodeLength(text);
	let total = 0;
	let start = 0;
	while (text.length - start > MAX_ENCODE_PIECE) {
		const limit = start + MAX_ENCODE_PIECE;
		let cut = -1;
		for (let i = limit; i > start + MAX_ENCODE_PIECE / 4; i--) {
			if (text.charCodeAt(i) === 32 && !isSpace(text.charCodeAt(i - 1)) && !isSpace(text.charCodeAt(i + 1))) {
				cut = i;
				break;
			}
		}
		if (cut < 0) {
			cut = limit;
			const code = text.charCodeAt(cut - 1);
			if (code >= 0xd800 && code <= 0xdbff) cut--; // keep surrogate pairs together
		}
		total += encodeLength(text.slice(start, cut));
		start = cut;
	}
	return total + encodeLength(text.slice(start));
}

/** Token counts by (length, hash) of the text: chat histories are re-sent on every turn. */
const countCache = new Map<string, number>();
const COUNT_CACHE_SIZE = 4096;

/** Tokens in `text` with gpt-tokenizer (o200k_base), cached. */
export function countTokens(text: string): number {
	if (text.length === 0) return 0;
	if (text.length < 16) return encodeLength(text);
	const key = `${text.length}:${hashString(text)}`;
	const cached = countCache.get(key);
	if (cached !== undefined) {
		countCache.delete(key);
		countCache.set(key, cached);
		return cached;
	}
	const count = countUncached(text);
	countCache.set(key, count);
	if (countCache.size > COUNT_CACHE_SIZE) {
		const oldest = countCache.keys().next().value;
		if (oldest !== undefined) countCache.delete(oldest);
	}
	return count;
}

/**
 * Prompt tokens of a chat request, counted as OpenAI counts them, so usage a client estimates
 * for an aborted request matches what the simulator records.
 */
export function countPromptTokens(messages: readonly unknown[]): number {
	// OpenAI's own way of counting chat prompts (its cookbook): per message a fixed overhead, the
	// role, the content, a name (plus one), tool-call names and arguments; plus the reply priming.
	let total = PROMPT_REPLY_PRIMING_TOKENS;
	for (const message of messages) {
		total += PROMPT_TOKENS_PER_MESSAGE;
		if (!isRecord(message)) {
			total += countTokens(contentText(message));
			continue;
		}
		if (typeof message.role === "string") total += countTokens(message.role);
		total += countTokens(contentText(message.content));
		if (typeof message.name === "string") total += 1 + countTokens(message.name);
		if (Array.isArray(message.tool_calls))
			for (const call of message.tool_calls) {
				if (!isRecord(call) || !isRecord(call.function)) continue;
				if (typeof call.function.name === "string") total += countTokens(call.function.name);
				if (typeof call.function.arguments === "string") total += countTokens(call.function.arguments);
			}
	}
	return total;
}
