import { describe, expect, it } from "vitest";
import { conversationContext, outlineTitle, parseOutline, parseTitleAndSummary } from "../../services/jobs/kinds/text";

// Reading what a model wrote: clean lists, lists in Markdown dress, prose, and too little.
describe("an outline", () => {
	it("takes the items of a numbered list, in order, with the title line apart", () => {
		const text = "Title: Tea Across Continents\n1. Origins in China\n2. The Silk Road\n3. British tea culture\n";
		expect(parseOutline(text, 3)).toEqual(["Origins in China", "The Silk Road", "British tea culture"]);
		expect(outlineTitle(text)).toBe("Tea Across Continents");
	});

	it("reads Markdown headings, bullets and bold, drops duplicates and extra items", () => {
		const text = "Here is the plan:\n## **Origins**\n- The Silk Road:\n* origins\n- Trade today\n- Extra\n";
		expect(parseOutline(text, 3)).toEqual(["Origins", "The Silk Road", "Trade today"]);
	});

	it("completes a list shorter than asked with numbered parts", () => {
		expect(parseOutline("1. Only one\n2. And two", 4)).toEqual(["Only one", "And two", "Part 3", "Part 4"]);
	});

	it("cuts prose into titles of a few words, in order", () => {
		const prose = "the system model answer question data value result example simple method process number part point";
		const titles = parseOutline(prose, 3);
		expect(titles).toEqual(["The system model answer question", "Data value result example simple", "Method process number part point"]);
		expect(outlineTitle(prose)).toBeUndefined();
	});

	it("falls back to numbered parts when the answer is too short or empty", () => {
		expect(parseOutline("ok", 3)).toEqual(["Part 1", "Part 2", "Part 3"]);
		expect(parseOutline("", 2)).toEqual(["Part 1", "Part 2"]);
	});
});

describe("a title and a summary", () => {
	it("takes the first line as the title and the rest as the summary", () => {
		expect(parseTitleAndSummary('Title: "Honey and bees"\nSummary: How bees make honey.')).toEqual({
			title: "Honey and bees",
			summary: "How bees make honey."
		});
	});

	it("cuts a one-paragraph answer into a short title and keeps it whole as the summary", () => {
		const answer = "the bright river runs through the quiet city and the garden near the market window";
		const { title, summary } = parseTitleAndSummary(answer);
		expect(title).toBe("The bright river runs through the quiet city");
		expect(summary).toBe(answer);
	});
});

describe("a conversation as model context", () => {
	const m = (role: string, content: string, status = "completed") => ({ role: role as "user" | "assistant", content, status: status as "completed" });

	it("keeps user and assistant messages as chat messages, without blocked or empty ones", () => {
		const context = conversationContext(
			[m("user", "hi"), m("assistant", ""), m("assistant", "bad", "blocked"), m("tool", "{}"), m("assistant", "hello")],
			1000
		);
		expect(context).toEqual([
			{ role: "user", content: "hi" },
			{ role: "assistant", content: "hello" }
		]);
	});

	it("keeps the start and the end of a long conversation within the size", () => {
		const long = Array.from({ length: 20 }, (_, i) => m(i % 2 ? "assistant" : "user", `message ${i} `.padEnd(100, "x")));
		const context = conversationContext(long, 1000);
		const size = context.reduce((n, c) => n + (c.content?.length ?? 0), 0);
		expect(size).toBeLessThanOrEqual(1000);
		expect(context[0].content).toContain("message 0 ");
		expect(context.at(-1)?.content).toContain("message 19 ");
	});
});
