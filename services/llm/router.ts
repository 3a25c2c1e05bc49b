/**
 * The model router: requests that name no model go to the cheapest tier that can
 * handle them. A score adds up signals from the last user message and its context:
 *
 *   length of the last user message     ≥ 80 tokens +1, ≥ 400 +2, ≥ 1500 +3
 *   code                                 a ``` fence +3, else ≥ 2 code-like lines +2,
 *                                        else a coding word ("function", "regex", 代码…) +1
 *   reasoning words                      +2 for each distinct idea ("prove", "step by step",
 *                                        "analyze", "compare", "design", "why", 分析, 证明, 设计…), at most +4
 *   prior turns                          ≥ 8 earlier user messages +1, ≥ 20 +2
 *
 * score 0 → cheap, 1–3 → medium, ≥ 4 → strong. "hi" is cheap; a question about a pasted code
 * block, or "prove … step by step", is strong.
 */
import { countTokens } from "gpt-tokenizer";
import type { ModelTiers, ProviderConfig } from "../../lib/config";
import type { ChatMessage } from "../../lib/chat-protocol";

export type Tier = keyof ModelTiers;

export interface RouteDecision {
	model: string;
	tier: Tier;
	/** The signals that decided, for logs and the REPL. */
	reason: string;
}

/**
 * Reasoning signals, one group per idea (a group counts once). English words match whole words
 * in any case, Chinese ones anywhere.
 */
const REASONING_GROUPS: readonly (readonly string[])[] = [
	["prove", "proof", "证明"],
	["step by step", "step-by-step", "逐步", "一步一步"],
	["analyze", "analyse", "analysis", "分析"],
	["compare", "comparison", "trade-off", "tradeoff", "比较", "对比"],
	["design", "architecture", "设计", "架构"],
	["derive", "derivation", "推导"],
	["optimize", "optimise", "优化"],
	["evaluate", "评估"],
	["why", "为什么"],
	["debug", "refactor", "调试", "重构"],
	["algorithm", "complexity", "算法", "复杂度"],
	["theorem", "lemma", "定理"]
];

const escapeRegExp = (word: string) => word.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const REASONING_PATTERNS = REASONING_GROUPS.map(group => ({
	label: group[0] as string,
	pattern: new RegExp(group.map(w => (/^\p{ASCII}+$/u.test(w) ? `\\b${escapeRegExp(w)}\\b` : escapeRegExp(w))).join("|"), "i")
}));

const CODE_WORDS = /\b(code|function|script|regex|sql|class|compile|stack trace|exception)\b|代码|函数|脚本|编程/i;

/** Lines that look like source: keywords of common languages, statement ends, operators. */
const CODE_LINE =
	/^\s*(def |class |function |fn |func |import |from \S+ import |#include|public |private |const |let |var |return\b|if \(|for \(|while \(|SELECT |INSERT |UPDATE |CREATE )|[;{}]\s*$|=>|::|\)\s*\{/;

function lastUserText(messages: readonly ChatMessage[]): string {
	for (let i = messages.length - 1; i >= 0; i--) {
		const message = messages[i] as ChatMessage;
		if (message.role === "user") return message.content ?? "";
	}
	return "";
}

/** Scores a request and names its tier's model. Pure; the tiers come from configuration. */
export function routeMessages(messages: readonly ChatMessage[], tiers: ModelTiers): RouteDecision {
	const text = lastUserText(messages);
	const signals: string[] = [];
	let score = 0;

	const tokens = countTokens(text);
	const lengthPoints = tokens >= 1500 ? 3 : tokens >= 400 ? 2 : tokens >= 80 ? 1 : 0;
	score += lengthPoints;
	signals.push(`${tokens} tokens${lengthPoints ? ` +${lengthPoints}` : ""}`);

	const codeLines = text.split("\n").filter(line => CODE_LINE.test(line)).length;
	if (text.includes("```")) {
		score += 3;
		signals.push("code block +3");
	} else if (codeLines >= 2) {
		score += 2;
		signals.push(`${codeLines} code-like lines +2`);
	} else if (CODE_WORDS.test(text)) {
		score += 1;
		signals.push("coding request +1");
	}

	const found = REASONING_PATTERNS.filter(({ pattern }) => pattern.test(text)).map(({ label }) => label);
	if (found.length > 0) {
		const points = Math.min(4, 2 * found.length);
		score += points;
		signals.push(`reasoning (${found.join(", ")}) +${points}`);
	}

	const priorTurns = Math.max(0, messages.filter(m => m.role === "user").length - 1);
	const turnPoints = priorTurns >= 20 ? 2 : priorTurns >= 8 ? 1 : 0;
	if (turnPoints) {
		score += turnPoints;
		signals.push(`${priorTurns} prior turns +${turnPoints}`);
	}

	const tier: Tier = score >= 4 ? "strong" : score >= 1 ? "medium" : "cheap";
	return { model: tiers[tier], tier, reason: `score ${score}: ${signals.join(", ")}` };
}

/** Without MODEL_TIERS: the first, middle and last of the models the providers serve, in order. */
export function defaultTiers(providers: readonly ProviderConfig[]): ModelTiers {
	const models = [...new Set(providers.flatMap(p => p.models))];
	if (models.length === 0) throw new Error("no provider serves any model");
	return {
		cheap: models[0] as string,
		medium: models[Math.floor((models.length - 1) / 2)] as string,
		strong: models[models.length - 1] as string
	};
}
