import { describe, expect, it } from "vitest";
import type { ChatMessage } from "../../lib/chat-protocol";
import { defaultTiers, routeMessages } from "../../services/llm/router";

const tiers = { cheap: "small", medium: "mid", strong: "big" };
const user = (content: string): ChatMessage => ({ role: "user", content });
const route = (...messages: ChatMessage[]) => routeMessages(messages, tiers);

describe("routeMessages", () => {
	it("sends short small talk to the cheap tier", () => {
		expect(route(user("hi"))).toMatchObject({ model: "small", tier: "cheap" });
		expect(route(user("What is the capital of France?"))).toMatchObject({ tier: "cheap" });
		expect(route(user("你好"))).toMatchObject({ tier: "cheap" });
	});

	it("sends a coding request or a single reasoning ask to the medium tier", () => {
		expect(route(user("Write a python function that reverses a string"))).toMatchObject({ model: "mid", tier: "medium" });
		expect(route(user("Compare Go and Rust for a CLI tool"))).toMatchObject({ tier: "medium" });
		expect(route(user("请分析一下这个问题"))).toMatchObject({ tier: "medium" });
	});

	it("sends pasted code with a question, or several reasoning asks, to the strong tier", () => {
		const code = "Why does this hang?\n```js\nwhile (true) { await lock.take(); }\n```";
		expect(route(user(code))).toMatchObject({ model: "big", tier: "strong" });
		expect(route(user("Prove step by step that the square root of 2 is irrational"))).toMatchObject({ tier: "strong" });
		expect(route(user("请设计一个缓存系统，并证明它的一致性"))).toMatchObject({ tier: "strong" });
	});

	it("counts code-like lines without a fence", () => {
		const pasted = "fix it:\nconst a = 1;\nfunction f() {\n  return a;\n}";
		expect(route(user(pasted)).reason).toMatch(/code-like lines/);
	});

	it("weighs length: a very long message alone is medium, with a reasoning ask strong", () => {
		const long = "the quick brown fox jumps over the lazy dog ".repeat(200);
		const decision = route(user(long));
		expect(decision.tier).toBe("medium"); // ≥ 1500 tokens: +3
		expect(route(user(`${long} Please analyze it.`)).tier).toBe("strong");
	});

	it("reads the last user message, and counts the earlier turns", () => {
		const history: ChatMessage[] = [];
		for (let i = 0; i < 10; i++) history.push(user(`turn ${i}`), { role: "assistant", content: "ok" });
		expect(route(user("Prove it"), { role: "assistant", content: "ok" }, user("thanks"))).toMatchObject({ tier: "cheap" });
		const decision = route(...history, user("and now?"));
		expect(decision.tier).toBe("medium");
		expect(decision.reason).toMatch(/10 prior turns \+1/);
	});

	it("matches English keywords as whole words only", () => {
		expect(route(user("I was designated driver")).tier).toBe("cheap");
		expect(route(user("Design a schema")).tier).toBe("medium");
	});

	it("explains its decision", () => {
		expect(route(user("Analyze and compare these two")).reason).toMatch(/^score 4: .*reasoning \(analyze, compare\) \+4/);
	});

	it("copes with no user message at all", () => {
		expect(route({ role: "system", content: "You are helpful" })).toMatchObject({ tier: "cheap" });
		expect(route({ role: "user", content: null })).toMatchObject({ tier: "cheap" });
	});
});

describe("defaultTiers", () => {
	it("takes the first, middle and last model the providers serve, without duplicates", () => {
		const p = (name: string, models: string[]) => ({ name, baseURL: "http://x/v1", models });
		expect(defaultTiers([p("a", ["sim-small", "sim-medium", "sim-large"])])).toEqual({ cheap: "sim-small", medium: "sim-medium", strong: "sim-large" });
		expect(defaultTiers([p("a", ["x", "y"]), p("b", ["y", "z", "w"])])).toEqual({ cheap: "x", medium: "y", strong: "w" });
		expect(defaultTiers([p("a", ["only"])])).toEqual({ cheap: "only", medium: "only", strong: "only" });
	});
});
