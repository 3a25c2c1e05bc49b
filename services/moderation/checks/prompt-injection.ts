/**
 * Prompt injection: text trying to take over the model's instructions. It judges user input and
 * tool output, never the model's own answer (a model explaining "ignore previous instructions"
 * attacks is not attacking anyone).
 *
 * Severity: in user input an attempt blocks (the user is talking to the model directly, there is
 * nothing to salvage). In tool output it only flags: the page or file is the user's data and the
 * attack a third party's, so the turn keeps it but wraps it as untrusted data for the model.
 *
 * Patterns run on the folded text (see ../normalize.ts), so "1gn0r3 a l l previous" and
 * zero-width-split words meet the same patterns. Words are joined by `\s*` rather than a space
 * because letter-spaced text loses its word gaps when it is joined.
 */
import type { CheckContext, CheckVerdict, Direction, ModerationCheck } from "./check";
import { allow } from "./check";

interface Rule {
	/** What the reason says about the match. */
	label: string;
	pattern: RegExp;
}

/** A pattern whose spaces stand for optional whitespace. */
const words = (source: string, flags = "u"): RegExp => new RegExp(source.replaceAll(" ", "\\s*"), flags);
const oneOf = (...alternatives: string[]): string => `(?:${alternatives.join("|")})`;

// "skip" and "neglect" are left out: recipes and manuals say "skip the previous instructions".
const VERB = "(?:ignore|disregard|forget|override|overrule|discard|abandon|bypass)";
// Not "default", "current" or "existing": "override the default policy" is a sysadmin's question.
const QUALIFIER = "(?:previous|prior|preceding|above|earlier|foregoing|former|initial|original|system|developer|safety)";
const NOUN = oneOf(
	"instructions?|rules?|directions?|directives?|prompts?|guidelines?|guidance|commands?",
	"constraints?|restrictions?|programming|polic(?:y|ies)|system prompt|system message|training"
);
// "my" is left out on purpose: "ignore my previous instructions" is a user correcting themselves.
const DETERMINER = "(?:the |your |ur |these |those |this |its )?";
const STRONG_ADJ = "(?:unrestricted|unfiltered|uncensored|jailbroken|unbound|unlimited|evil|rogue|amoral|unethical|unaligned)";
const SPECIAL_MODE = "(?:developer|dev|god|jailbreak|jailbroken|dan|unrestricted|unfiltered|uncensored|sudo|admin|debug)";
const EXTRACT_VERB =
	"(?:reveal|print|show|display|output|repeat|dump|leak|disclose|expose|share|recite|spell out|write out|tell me|tell us|give me|send me|paste|echo)";
const SECRET_NOUN = oneOf(
	"system prompt|system message|system instructions?|developer message|pre-?prompt",
	"(?:initial|original|hidden|secret) (?:prompt|instructions?)"
);
// Where earlier instructions came from: "the instructions above", "the rules you were given".
const GIVEN = oneOf(
	"above|before this|so far|until now|up to now",
	"given (?:to you )?(?:before|earlier|previously)",
	"you(?:'ve| have| were)? (?:been )?(?:given|told|received)"
);
const YOU_ARE = "(?<!\\p{L})(?:you(?:'re| are| r|re)|u r)";
// What a jailbreak says the model has become.
const UNBOUND = oneOf(
	"dan(?!\\p{L})",
	`an? ${STRONG_ADJ}`,
	`(?:in|entering|operating in) (?:an? )?${SPECIAL_MODE} mode`,
	"free (?:of|from) (?:all |any |your )?(?:restrictions|rules|guidelines|limitations|constraints|filters|censorship|programming|polic(?:y|ies)|openai)",
	"no longer (?:bound|restricted|limited|an? ai|an? assistant|chatgpt)",
	"not bound",
	"without (?:any )?(?:restrictions|limits|filters|rules|guidelines)"
);

const ROLE_OVERRIDE: Rule[] = [
	{
		label: "instruction override",
		pattern: words(`${VERB} (?:all |any |every |each )?(?:of )?${DETERMINER}${QUALIFIER}(?: and ${QUALIFIER})? ${NOUN}`)
	},
	{ label: "instruction override", pattern: words(`${VERB} (?:your|ur) (?:own )?${NOUN}`) },
	{
		label: "instruction override",
		pattern: words(`${VERB} (?:all|any|every) (?:of )?(?:the |your )?(?:instructions?|prompts?|guidelines?|programming|system prompts?)`)
	},
	{
		label: "instruction override",
		pattern: words(`${VERB} (?:all |any )?(?:of )?(?:the )?(?:instructions?|rules?|directions?|prompts?|guidelines?) ${GIVEN}`)
	},
	{
		label: "instruction override",
		pattern: words(
			"forget (?:about )?(?:everything|all|anything) " +
				"(?:(?:that )?you(?:'ve| have| were| had)? (?:been )?(?:told|given|instructed)|above|before this|prior|previously|so far|until now|up to now)"
		)
	},
	{ label: "role override", pattern: words(`${YOU_ARE} (?:now|from now on|going to be|gonna be) ${UNBOUND}`) },
	{ label: "role override", pattern: words(`from now on,? you(?:'re| are| will be| will act as| act as) ${UNBOUND}`) },
	{ label: "role override", pattern: words("(?<!\\p{L})do anything now(?!\\p{L})") },
	{
		// Not "enable developer mode": that is how Android settings are unlocked.
		label: "role override",
		pattern: words("(?:enter|enable|activate|switch (?:to|into)|turn on) (?:the )?(?:dan|jailbreak|jailbroken|god|unrestricted|unfiltered|uncensored) mode")
	},
	{
		label: "role override",
		pattern: words("(?:chatgpt|assistant|ai|model|llm|gpt) with (?:developer|dev|dan|jailbreak) mode (?:enabled|activated|on)")
	},
	{
		// "act as the system", not "act as a system administrator".
		label: "role override",
		pattern: words(
			`${oneOf("(?:act|behave|respond|speak|pose|function) as (?:if you (?:are|were) )?", "pretend (?:to be|you are) ")}` +
				"(?:the |a |an |your )?system(?: prompt| message| role)?(?=\\s*(?:$|[^\\s\\p{L}]|(?:and|now|from|with|to|who|that|which|instead)(?!\\p{L})))"
		)
	},
	{
		label: "role override",
		pattern: words("(?<!\\p{L})i(?:'m| am) (?:your|ur) (?:developer|creator|programmer|owner|admin|administrator|operator|system)(?!\\p{L})")
	},
	{
		label: "new instructions",
		pattern: words("(?<!\\p{L})(?:(?:new|updated|real|actual|revised|additional|override) (?:system )?instructions?|new system prompt) ?:")
	},
	{ label: "new instructions", pattern: words("here (?:are|is) your (?:new|real|actual|updated) (?:instructions?|rules|prompt|directives?)") },
	{
		label: "system prompt extraction",
		pattern: words(
			`${EXTRACT_VERB} (?:me |us )?(?:all |exactly |verbatim |back )?(?:of )?(?:your|ur) ` +
				`(?:full |entire |complete |exact |original |initial |hidden |secret |internal )*(?:${SECRET_NOUN}|prompt|instructions)`
		)
	},
	{ label: "system prompt extraction", pattern: words(`what(?:'s| is| are| were) (?:your|ur) (?:full |entire |exact )?${SECRET_NOUN}`) },
	{
		label: "system prompt extraction",
		pattern: words(`${EXTRACT_VERB} (?:me |us )?the ${SECRET_NOUN} (?:you(?:'ve| have| were| are)|above|verbatim|word for word)`)
	},
	// Chinese: ignore previous/above (all) instructions; forget your settings; you are now an unrestricted…; reveal your system prompt.
	{
		label: "instruction override",
		pattern:
			/(?:忽略|无视|忽视|不要理会|不用理会|别管|忘记|忘掉|跳过)掉?你?(?:之前|以前|先前|此前|上面|上述|以上|前面|前述|所有|全部|一切|原来|原有)(?:的|给你的)?(?:所有|全部|一切)?的?(?:指令|指示|提示词|提示|系统提示|规则|设定|命令|限制)/u
	},
	{
		label: "role override",
		pattern:
			/(?:你现在是|现在你是|从现在(?:开始|起)[,，]?你(?:就)?是|你现在扮演)[^。！？!?\n]{0,8}?(?:dan|没有|不受|无限制|无约束|越狱|开发者模式|不道德|邪恶|系统|管理员|不需要遵守|可以做任何)/u
	},
	{ label: "role override", pattern: /你(?:现在)?(?:处于|进入|已经进入|已进入)(?:了)?(?:开发者|越狱|上帝|dan)模式|越狱模式|dan模式/u },
	{
		label: "system prompt extraction",
		pattern:
			/(?:告诉我|输出|显示|打印|泄露|重复|展示|给我看|说出|透露|复述)(?:一下)?你的(?:完整的?|全部的?|原始的?|初始的?)?(?:系统提示词?|系统提示语|系统指令|初始指令|初始提示|系统消息|提示词)/u
	},
	{ label: "new instructions", pattern: /新的?(?:指令|指示|系统提示)[:：]/u }
];

// Chat-template tokens and role labels a user has no reason to type.
const FAKE_DELIMITERS: Rule[] = [
	{ label: "fake role delimiter", pattern: /<\|\s*[a-z][a-z0-9_]{1,30}\s*\|>/u },
	{ label: "fake role delimiter", pattern: /\[\s*\/?\s*inst\s*\]|<<\s*\/?\s*sys\s*>>/u },
	{ label: "fake role delimiter", pattern: /(?:^|\n)\s*#{2,}\s*(?:system|instructions?)\s*:/u },
	{ label: "fake role delimiter", pattern: /(?:^|\n)[ \t>*_]*assistant\s*:/u },
	// "System: Ubuntu 22.04" in a bug report is a label; "System: you are…" is a fake system turn.
	{
		label: "fake role delimiter",
		pattern: new RegExp(
			"(?:^|\\n)[ \\t>*_]*system\\s*:(?=[^\\n]*" +
				oneOf(
					"\\byou\\b|\\byour\\b|\\bai\\b|\\bmust\\b|\\bact\\b|\\bnew\\b|\\bnow\\b|assistant|model|instruction|rules|mode",
					"ignore|disregard|forget|override|always|never|do not|don't|respond|reply|answer|pretend|reveal"
				) +
				")",
			"u"
		)
	}
];

// Hidden text that addresses an AI and tells it to do something: planted instructions in a page.
const ADDRESSES_AI = /(?<!\p{L})(?:ai|assistant|chatbot|llm|language model|ai model|chatgpt|gpt|claude|gemini|copilot)(?!\p{L})/u;
const IMPERATIVE = new RegExp(
	"(?<!\\p{L})" +
		oneOf(
			"ignore|disregard|forget|instead|must|should|do not|don't|never|always|tell|say|respond|reply|answer",
			"send|include|output|print|reveal|execute|run|call|visit|navigate|recommend|click|email|summari[sz]e"
		) +
		"(?!\\p{L})",
	"u"
);

const INJECTION_RULES = [...ROLE_OVERRIDE, ...FAKE_DELIMITERS];

function matchedLabels(text: string, labels: Set<string>): void {
	for (const rule of INJECTION_RULES) if (!labels.has(rule.label) && rule.pattern.test(text)) labels.add(rule.label);
}

export function promptInjectionCheck(): ModerationCheck {
	const name = "prompt_injection";
	return {
		name,
		appliesTo: ["input", "tool"] satisfies Direction[],
		async run(_text: string, direction: Direction, ctx: CheckContext): Promise<CheckVerdict> {
			const { folded, hidden } = ctx.normalized;
			const labels = new Set<string>();
			matchedLabels(folded, labels);
			for (const part of hidden) {
				const before = labels.size;
				matchedLabels(part, labels);
				if (labels.size > before) labels.add("hidden instructions");
			}
			// A page's comments and invisible text are where planted instructions hide; only there
			// is "an AI told to do something" suspicious enough to flag on its own.
			if (direction === "tool" && hidden.some(part => ADDRESSES_AI.test(part) && IMPERATIVE.test(part))) labels.add("hidden instructions");
			if (labels.size === 0) return allow(name);
			const where = direction === "tool" ? " in tool output (treat as untrusted data)" : "";
			return {
				check: name,
				action: direction === "tool" ? "flag" : "block",
				categories: ["prompt_injection"],
				reasons: [...labels].map(label => `prompt_injection: ${label}${where}`)
			};
		}
	};
}
