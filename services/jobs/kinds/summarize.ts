/**
 * `summarize`: a title and a short summary for each of the owner's conversations still called
 * "New chat": those never titled, which includes those whose first answer was stopped or failed
 * (a conversation is titled only when its first answer completes). Steps: "candidates" (which
 * conversations), then one step per conversation ("conversation:<id>"): its start read, the
 * model asked, the title written back with the owner-checked `conversation.rename`. A
 * conversation renamed by its owner meanwhile, emptied or deleted is left as it is.
 */
import { z } from "zod";
import type { ChatMessage } from "../../../lib/chat-protocol";
import { ERR_NOT_FOUND } from "../../../lib/errors";
import type { ConversationView } from "../../conversation/store";
import type { JobContext, JobKind, JobResult } from "../kind";
import { allMessages, askModel, conversationsPage, getConversation, type Page } from "./calls";
import { conversationContext, parseTitleAndSummary, shortTitle } from "./text";

/** The title clients show for a conversation without one; a conversation may also carry it literally. */
export const DEFAULT_TITLE = "New chat";
export const SUMMARIZE_MAX_CONVERSATIONS = 100;
/** The start of a conversation is what its title is about. */
const OPENING_MESSAGES = 10;
const MAX_PROMPT_CHARS = 6000;
const ANSWER_TOKENS = 200;

export const summarizeInput = z
	.object({
		/** At most this many conversations, the most recently active first. */
		limit: z.number().int().min(1).max(SUMMARIZE_MAX_CONVERSATIONS).default(20)
	})
	.strict();

export type SummarizeInput = z.infer<typeof summarizeInput>;

export function needsTitle(title: string | null): boolean {
	return !title?.trim() || title.trim().toLowerCase() === DEFAULT_TITLE.toLowerCase();
}

interface Outcome {
	id: string;
	/** "titled": renamed; else why it was left as it is. */
	outcome: "titled" | "empty" | "renamed-meanwhile" | "gone";
	title?: string;
	summary?: string;
}

async function candidates(job: JobContext<SummarizeInput>): Promise<string[]> {
	const ids: string[] = [];
	let cursor: string | null = null;
	do {
		const page: Page<ConversationView> = await conversationsPage(job, cursor);
		for (const c of page.items) if (needsTitle(c.title) && ids.length < job.input.limit) ids.push(c.id);
		cursor = page.nextCursor;
	} while (cursor && ids.length < job.input.limit);
	return ids;
}

function titlePrompt(context: ChatMessage[]): ChatMessage[] {
	return [
		{
			role: "system",
			content: "You name conversations. Answer with a short title (at most eight words) on the first line, then a summary of one or two sentences."
		},
		...context,
		{ role: "user", content: "Name and summarize this conversation." }
	];
}

const isNotFound = (err: unknown) => (err as { type?: unknown } | null)?.type === ERR_NOT_FOUND;

async function titleConversation(job: JobContext<SummarizeInput>, id: string): Promise<Outcome> {
	try {
		const messages = (await allMessages(job, id)).slice(0, OPENING_MESSAGES);
		const context = conversationContext(messages, MAX_PROMPT_CHARS);
		if (context.length === 0) return { id, outcome: "empty" };
		const answer = parseTitleAndSummary(await askModel(job, { messages: titlePrompt(context), maxTokens: ANSWER_TOKENS }));
		const title = answer.title || shortTitle(messages.find(m => m.role === "user")?.content ?? "") || "Untitled conversation";
		// The owner may have named it while the model was answering: their title stands.
		if (!needsTitle((await getConversation(job, id)).title)) return { id, outcome: "renamed-meanwhile" };
		await job.ctx.call("conversation.rename", { id, title });
		return { id, outcome: "titled", title, summary: answer.summary };
	} catch (err) {
		if (isNotFound(err)) return { id, outcome: "gone" };
		throw err;
	}
}

function summariesDocument(outcomes: Outcome[]): string {
	const parts = ["# Conversation summaries", ""];
	for (const o of outcomes) if (o.outcome === "titled") parts.push(`## ${o.title}`, "", o.summary ?? "", "", `*Conversation ${o.id}*`, "");
	if (parts.length === 2) parts.push("No conversation needed a title.", "");
	return parts.join("\n");
}

export const summarizeKind: JobKind<SummarizeInput> = {
	name: "summarize",
	input: summarizeInput,
	retry: { maxAttempts: 4, baseDelayMs: 2000, maxDelayMs: 60_000 },
	async run(job): Promise<JobResult> {
		const ids = await job.step("candidates", () => candidates(job));
		const total = ids.length;
		await job.progress({ current: 0, total, step: total ? `conversation 1 of ${total}` : "nothing to title" });
		const outcomes: Outcome[] = [];
		for (const [i, id] of ids.entries()) {
			outcomes.push(await job.step(`conversation:${id}`, () => titleConversation(job, id)));
			await job.progress({ current: i + 1, total, step: `conversation ${i + 1} of ${total}` });
		}
		const titled = outcomes.filter(o => o.outcome === "titled");
		return {
			summary: {
				titled: titled.length,
				skipped: outcomes.length - titled.length,
				conversations: titled.map(({ id, title, summary }) => ({ id, title, summary }))
			},
			document: { filename: `summaries-${job.jobId}.md`, contentType: "text/markdown", content: summariesDocument(outcomes) }
		};
	}
};
