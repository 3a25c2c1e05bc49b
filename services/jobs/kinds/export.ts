/**
 * `export`: one of the owner's conversations, or all of them, as a Markdown or JSON document.
 * Steps: "conversations" (which ones, and the export's time), then one step per page of each
 * conversation's messages ("messages:<conversation>:<page>"), so a redelivered job reads again only
 * the pages it had not recorded. Conversations are read through the conversation service's own
 * owner-checked actions, with the owner as the caller.
 */
import { z } from "zod";
import { ERR_NOT_FOUND } from "../../../lib/errors";
import type { ConversationView, MessageView } from "../../conversation/store";
import type { JobContext, JobKind, JobResult } from "../kind";
import { conversationsPage, getConversation, messagesPage, type Page } from "./calls";

export const EXPORT_FORMATS = ["markdown", "json"] as const;

export const exportInput = z
	.object({
		/** Absent: every conversation of the owner. */
		conversationId: z.uuid().optional(),
		format: z.enum(EXPORT_FORMATS).default("markdown")
	})
	.strict();

export type ExportInput = z.infer<typeof exportInput>;

type ConversationHeader = Pick<ConversationView, "id" | "title" | "createdAt" | "updatedAt">;

interface Selection {
	exportedAt: string;
	conversations: ConversationHeader[];
}

interface ExportedConversation extends ConversationHeader {
	messages: MessageView[];
}

const headerOf = ({ id, title, createdAt, updatedAt }: ConversationView): ConversationHeader => ({ id, title, createdAt, updatedAt });

async function select(job: JobContext<ExportInput>): Promise<Selection> {
	const exportedAt = new Date().toISOString();
	const { conversationId } = job.input;
	// Owner-checked: another user's conversation is NOT_FOUND, which no retry changes.
	if (conversationId) return { exportedAt, conversations: [headerOf(await getConversation(job, conversationId))] };
	const conversations: ConversationHeader[] = [];
	let cursor: string | null = null;
	do {
		const page: Page<ConversationView> = await conversationsPage(job, cursor);
		conversations.push(...page.items.map(headerOf));
		cursor = page.nextCursor;
	} while (cursor);
	return { exportedAt, conversations };
}

const isNotFound = (err: unknown) => (err as { type?: unknown } | null)?.type === ERR_NOT_FOUND;

/** A conversation's messages, oldest first, one recorded step per page; null when it was deleted meanwhile. */
async function exportMessages(job: JobContext<ExportInput>, conversationId: string): Promise<MessageView[] | null> {
	const newestFirst: MessageView[] = [];
	let cursor: string | null = null;
	for (let page = 1; ; page++) {
		const at = cursor;
		const read = await job.step(`messages:${conversationId}:${page}`, async (): Promise<Page<MessageView> | null> => {
			try {
				return await messagesPage(job, conversationId, at);
			} catch (err) {
				// Deleted since it was listed: left out of an export of everything; the one asked for fails.
				if (isNotFound(err) && !job.input.conversationId) return null;
				throw err;
			}
		});
		if (!read) return null;
		newestFirst.push(...read.items);
		cursor = read.nextCursor;
		if (!cursor) return newestFirst.reverse();
	}
}

const ROLE_HEADINGS: Readonly<Record<string, string>> = { user: "User", assistant: "Assistant", system: "System", tool: "Tool" };

function markdownMessage(m: MessageView): string {
	const status = m.status === "completed" ? "" : ` · ${m.status}`;
	const name = typeof m.metadata?.name === "string" ? ` (${m.metadata.name})` : "";
	const parts = [`### ${ROLE_HEADINGS[m.role] ?? m.role}${name} · ${m.createdAt}${status}`, ""];
	for (const call of m.toolCalls ?? []) parts.push(`- tool call \`${call.function.name}\`: \`${call.function.arguments}\``);
	if (m.toolCalls?.length) parts.push("");
	if (m.content) parts.push(m.content.trim(), "");
	if (m.error) parts.push(`*${m.error.code}: ${m.error.message}*`, "");
	return parts.join("\n");
}

function markdownDocument(exportedAt: string, conversations: ExportedConversation[]): string {
	const messages = conversations.reduce((n, c) => n + c.messages.length, 0);
	const parts = ["# chatmesh export", "", `Exported ${exportedAt} · ${conversations.length} conversation(s) · ${messages} message(s)`, ""];
	for (const c of conversations) {
		parts.push(`## ${c.title || "New chat"}`, "", `*Conversation ${c.id} · created ${c.createdAt} · last active ${c.updatedAt}*`, "");
		for (const m of c.messages) parts.push(markdownMessage(m));
	}
	return parts.join("\n");
}

export const exportKind: JobKind<ExportInput> = {
	name: "export",
	input: exportInput,
	retry: { maxAttempts: 5, baseDelayMs: 1000, maxDelayMs: 30_000 },
	async run(job): Promise<JobResult> {
		const selection = await job.step("conversations", () => select(job));
		const total = selection.conversations.length;
		await job.progress({ current: 0, total, step: total ? `conversation 1 of ${total}` : "nothing to export" });
		const exported: ExportedConversation[] = [];
		for (const [i, conversation] of selection.conversations.entries()) {
			const messages = await exportMessages(job, conversation.id);
			if (messages) exported.push({ ...conversation, messages });
			await job.progress({ current: i + 1, total, step: `conversation ${i + 1} of ${total}` });
		}
		const date = selection.exportedAt.slice(0, 10);
		const messages = exported.reduce((n, c) => n + c.messages.length, 0);
		const json = job.input.format === "json";
		return {
			summary: { format: job.input.format, conversations: exported.length, messages },
			document: json
				? {
						filename: `chatmesh-export-${date}.json`,
						contentType: "application/json",
						content: `${JSON.stringify({ exportedAt: selection.exportedAt, conversations: exported }, null, 2)}\n`
					}
				: { filename: `chatmesh-export-${date}.md`, contentType: "text/markdown", content: markdownDocument(selection.exportedAt, exported) }
		};
	}
};
