/**
 * Text helpers of the job kinds: reading what a model wrote (an outline, a title and a summary)
 * robustly, since a model may answer in prose, a Markdown list or anything between, and putting a
 * conversation into a model's context within a size.
 */
import type { ChatMessage } from "../../../lib/chat-protocol";
import type { MessageView } from "../../conversation/store";

/** A title cut at a word boundary to at most `max` characters. */
export function shortTitle(text: string, max = 60): string {
	const flat = text.replace(/\s+/g, " ").trim();
	if (flat.length <= max) return flat;
	const cut = flat.slice(0, max);
	const space = cut.lastIndexOf(" ");
	return `${(space > max / 2 ? cut.slice(0, space) : cut).trimEnd()}…`;
}

/** Text cut to at most `max` characters (whitespace kept). */
export function clip(text: string, max: number): string {
	return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** The first letter in upper case (model titles often come in lower case). */
function capitalized(text: string): string {
	return text.charAt(0).toUpperCase() + text.slice(1);
}

/** A list item's marker: a heading, a bullet, "1." / "1)" / "(1)" / "a.". */
const LIST_MARKER = /^\s*(?:#{1,6}\s+|[-*+•]\s+|\(?\d{1,2}[.):]\s+|[a-hA-H][.)]\s+)/;
/** The longest line still taken as a title rather than prose. */
const MAX_TITLE_LINE = 100;
const MAX_SECTION_TITLE = 80;
/** Words per title when titles are cut out of prose. */
const FALLBACK_TITLE_WORDS = 6;

function cleanLine(line: string): string {
	return line
		.replace(LIST_MARKER, "")
		.replace(/\*\*|__|`/g, "")
		.trim()
		.replace(/^["'“”]+|["'“”]+$/g, "")
		.replace(/[:.]\s*$/, "")
		.trim();
}

/**
 * `count` section titles from a model's outline. A clean list (numbered, bulleted or headed lines,
 * or at least `count` short lines) gives its items in order, duplicates dropped; a list shorter
 * than asked is completed with "Part i". Prose (no list at all) is cut into `count` titles of a
 * few words each, in order; an answer too short for that gives "Part i" titles.
 */
export function parseOutline(text: string, count: number): string[] {
	const lines = text.split(/\r?\n/).filter(line => line.trim() && !/^\s*title\s*:/i.test(line));
	const marked = lines.filter(line => LIST_MARKER.test(line));
	const short = lines.filter(line => line.trim().length <= MAX_TITLE_LINE);
	const candidates = marked.length >= 2 ? marked : short.length >= count ? short : [];
	const seen = new Set<string>();
	const titles: string[] = [];
	for (const line of candidates) {
		const title = shortTitle(cleanLine(line), MAX_SECTION_TITLE);
		const key = title.toLowerCase();
		if (!title || seen.has(key)) continue;
		seen.add(key);
		titles.push(capitalized(title));
		if (titles.length === count) return titles;
	}
	if (titles.length === 0) {
		const words = text
			.replace(/[#*_`"“”]/g, " ")
			.split(/\s+/)
			.filter(Boolean);
		const per = Math.min(FALLBACK_TITLE_WORDS, Math.floor(words.length / count));
		if (per >= 2) for (let i = 0; i < count; i++) titles.push(capitalized(words.slice(i * per, (i + 1) * per).join(" ")));
	}
	while (titles.length < count) titles.push(`Part ${titles.length + 1}`);
	return titles;
}

/** The report's title when the outline names one ("Title: …"). */
export function outlineTitle(text: string): string | undefined {
	const line = text.split(/\r?\n/).find(l => /^\s*(?:#\s*)?title\s*:/i.test(l));
	const title = line ? cleanLine(line.replace(/^\s*(?:#\s*)?title\s*:/i, "")) : "";
	return title ? shortTitle(title) : undefined;
}

const MAX_CONVERSATION_TITLE = 60;
const TITLE_WORDS = 8;

/**
 * A conversation's title and summary from a model answer asked for "a title on the first line,
 * then a summary". A first line too long for a title (a model that answered in one paragraph)
 * gives its first words as the title and the whole answer as the summary.
 */
export function parseTitleAndSummary(text: string): { title: string; summary: string } {
	const lines = text
		.split(/\r?\n/)
		.map(l => l.trim())
		.filter(Boolean);
	const first = cleanLine((lines[0] ?? "").replace(/^title\s*:/i, ""));
	const rest = lines
		.slice(1)
		.join(" ")
		.replace(/^summary\s*:\s*/i, "")
		.trim();
	const words = first.split(/\s+/).filter(Boolean);
	if (words.length <= TITLE_WORDS && first.length <= MAX_CONVERSATION_TITLE && rest) return { title: capitalized(first), summary: rest };
	const title = shortTitle(words.slice(0, TITLE_WORDS).join(" "), MAX_CONVERSATION_TITLE);
	return { title: capitalized(title), summary: lines.join(" ") };
}

/**
 * A conversation as model context: its user and assistant messages, oldest first, as real chat
 * messages (a transcript pasted into one message would read as forged role markers to the
 * content policy). Blocked and empty messages are left out, as a chat turn leaves them out.
 * Past `maxChars`, the start (where a conversation's subject is set) and the end are kept.
 */
export function conversationContext(messages: readonly Pick<MessageView, "role" | "content" | "status">[], maxChars: number): ChatMessage[] {
	const perMessage = Math.max(200, Math.floor(maxChars / 4));
	const all: ChatMessage[] = messages
		.filter(m => (m.role === "user" || m.role === "assistant") && m.status !== "blocked" && m.content?.trim())
		.map(m => ({ role: m.role, content: clip(m.content.trim(), perMessage) }));
	const size = (list: ChatMessage[]) => list.reduce((n, m) => n + (m.content?.length ?? 0), 0);
	if (size(all) <= maxChars) return all;
	const head: ChatMessage[] = [];
	while (head.length < all.length && size(head) + (all[head.length].content?.length ?? 0) <= maxChars * 0.6) head.push(all[head.length]);
	const tail: ChatMessage[] = [];
	for (let i = all.length - 1; i >= head.length && size(head) + size(tail) + (all[i].content?.length ?? 0) <= maxChars; i--) tail.unshift(all[i]);
	return [...head, ...tail];
}
