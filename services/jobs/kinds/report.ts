/**
 * `report`: a Markdown report from a prompt or from one of the owner's conversations. Steps:
 * "source" (the prompt, or the conversation read once), "outline" (the model names
 * the sections), "section:i" for each section (asked in parallel: they depend only on the
 * outline), "summary" (the model sums the sections up). Every model answer is a recorded step, so
 * a redelivered job asks the model only for what it had not answered yet.
 */
import { z } from "zod";
import type { ChatMessage } from "../../../lib/chat-protocol";
import type { JobContext, JobKind, JobResult } from "../kind";
import { allMessages, askModel, getConversation } from "./calls";
import { clip, conversationContext, outlineTitle, parseOutline, shortTitle } from "./text";

export const REPORT_MIN_SECTIONS = 2;
export const REPORT_MAX_SECTIONS = 8;
const DEFAULT_SECTIONS = 4;
/** How much of the source goes into each prompt. */
const MAX_SOURCE_CHARS = 12_000;
/** How much of each section the summary prompt sees. */
const MAX_SECTION_CHARS_FOR_SUMMARY = 1500;
const OUTLINE_TOKENS = 300;
const SECTION_TOKENS = 700;
const SUMMARY_TOKENS = 250;

export const reportInput = z
	.object({
		prompt: z.string().trim().min(1).max(8000).optional(),
		conversationId: z.uuid().optional(),
		sections: z.number().int().min(REPORT_MIN_SECTIONS).max(REPORT_MAX_SECTIONS).default(DEFAULT_SECTIONS)
	})
	.strict()
	.refine(input => (input.prompt === undefined) !== (input.conversationId === undefined), {
		message: "Give either a prompt or a conversationId, not both"
	});

export type ReportInput = z.infer<typeof reportInput>;

interface Source {
	/** What the report is about, as a heading. */
	topic: string;
	/** What the model reads before each instruction: the prompt, or the conversation's messages. */
	context: ChatMessage[];
	from: { kind: "prompt" } | { kind: "conversation"; conversationId: string; title: string | null };
}

interface Outline {
	title: string;
	sections: string[];
}

async function readSource(job: JobContext<ReportInput>): Promise<Source> {
	const { prompt, conversationId } = job.input;
	if (prompt !== undefined) return { topic: shortTitle(prompt), context: [{ role: "user", content: prompt }], from: { kind: "prompt" } };
	const id = conversationId as string;
	// Both calls are owner-checked: another user's conversation is NOT_FOUND, which no retry changes.
	const [conversation, messages] = await Promise.all([getConversation(job, id), allMessages(job, id)]);
	const topic = conversation.title || shortTitle(messages.find(m => m.role === "user")?.content ?? "") || "Conversation";
	const context = conversationContext(messages, MAX_SOURCE_CHARS);
	return {
		topic,
		context: context.length ? context : [{ role: "user", content: topic }],
		from: { kind: "conversation", conversationId: id, title: conversation.title }
	};
}

function outlinePrompt(source: Source, count: number): ChatMessage[] {
	return [
		{
			role: "system",
			content:
				`You plan reports. Answer with a line "Title: <the report's title>", then exactly ${count} section titles, ` +
				`one per line, numbered "1.", "2.", and so on. Nothing else.`
		},
		...source.context,
		{ role: "user", content: `Plan a report of ${count} sections about ${source.from.kind === "prompt" ? "the above" : "this conversation"}.` }
	];
}

function sectionPrompt(source: Source, outline: Outline, index: number): ChatMessage[] {
	const plan = outline.sections.map((s, i) => `${i + 1}. ${s}`).join("\n");
	return [
		{ role: "system", content: "You write one section of a report, in Markdown, without repeating its heading. Stay on the section's subject." },
		...source.context,
		{ role: "user", content: `Report: ${outline.title}\nSections:\n${plan}\n\nWrite section ${index + 1}, "${outline.sections[index]}".` }
	];
}

function summaryPrompt(outline: Outline, sections: string[]): ChatMessage[] {
	const body = outline.sections.map((title, i) => `## ${title}\n${clip(sections[i] ?? "", MAX_SECTION_CHARS_FOR_SUMMARY)}`).join("\n\n");
	return [
		{ role: "system", content: "You summarize reports in two or three sentences of plain prose." },
		{ role: "user", content: `Summarize this report, "${outline.title}":\n\n${body}` }
	];
}

function reportDocument(source: Source, outline: Outline, sections: string[], summary: string): string {
	const origin = source.from.kind === "prompt" ? "a prompt" : `the conversation “${source.from.title || source.topic}”`;
	const parts = [
		`# ${outline.title}`,
		"",
		...summary
			.trim()
			.split("\n")
			.map(line => `> ${line}`),
		""
	];
	for (const [i, title] of outline.sections.entries()) parts.push(`## ${i + 1}. ${title}`, "", (sections[i] ?? "").trim(), "");
	parts.push("---", "", `*Written by chatmesh from ${origin}.*`, "");
	return parts.join("\n");
}

export const reportKind: JobKind<ReportInput> = {
	name: "report",
	input: reportInput,
	retry: { maxAttempts: 4, baseDelayMs: 2000, maxDelayMs: 60_000 },
	async run(job): Promise<JobResult> {
		const count = job.input.sections;
		const total = count + 2;
		let done = 0;
		await job.progress({ current: 0, total, step: "outline" });
		const source = await job.step("source", () => readSource(job));

		const outline = await job.step("outline", async (): Promise<Outline> => {
			const answer = await askModel(job, { messages: outlinePrompt(source, count), maxTokens: OUTLINE_TOKENS });
			return { title: outlineTitle(answer) ?? source.topic, sections: parseOutline(answer, count) };
		});
		await job.progress({ current: ++done, total, step: "outline" });

		const sections = await Promise.all(
			outline.sections.map(async (_title, i) => {
				const text = await job.step(`section:${i + 1}`, () => askModel(job, { messages: sectionPrompt(source, outline, i), maxTokens: SECTION_TOKENS }));
				await job.progress({ current: ++done, total, step: `section ${i + 1} of ${count}` });
				return text;
			})
		);

		const summary = await job.step("summary", () => askModel(job, { messages: summaryPrompt(outline, sections), maxTokens: SUMMARY_TOKENS }));
		await job.progress({ current: ++done, total, step: "summary" });

		return {
			summary: { title: outline.title, sections: outline.sections },
			document: { filename: `report-${job.jobId}.md`, contentType: "text/markdown", content: reportDocument(source, outline, sections, summary) }
		};
	}
};
