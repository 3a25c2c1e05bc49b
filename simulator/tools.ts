/**
 * Rule-based tool calling for the simulator. A user prompt that names an offered function tool
 * (as a whole word, any case) gets a tool call for it; arguments come from a JSON object written
 * right after the name in the prompt, else from the tool's JSON schema.
 */

export interface OfferedTool {
	name: string;
	/** The function's JSON schema (`function.parameters`), possibly absent. */
	parameters: unknown;
}

export interface PlannedToolCall {
	name: string;
	/** JSON text of the arguments object. */
	arguments: string;
}

function isRecord(value: unknown): value is Record<string, unknown> {
	return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The function tools of a request's `tools` array (other kinds and malformed entries skipped). */
export function offeredTools(tools: unknown): OfferedTool[] {
	if (!Array.isArray(tools)) return [];
	const seen = new Set<string>();
	const out: OfferedTool[] = [];
	for (const tool of tools) {
		if (!isRecord(tool) || !isRecord(tool.function)) continue;
		if (tool.type !== undefined && tool.type !== "function") continue;
		const name = tool.function.name;
		if (typeof name !== "string" || name.length === 0 || seen.has(name)) continue;
		seen.add(name);
		out.push({ name, parameters: tool.function.parameters });
	}
	return out;
}

function escapeRegExp(text: string): string {
	return text.replace(/[.*+?^${}()|[\]\\/-]/g, "\\$&");
}

/**
 * The JSON object text starting at `start` (which must hold "{"), found by brace matching that
 * respects JSON strings; undefined when the braces never balance.
 */
function balancedObjectAt(text: string, start: number): string | undefined {
	let depth = 0;
	let inString = false;
	for (let i = start; i < text.length; i++) {
		const ch = text[i];
		if (inString) {
			if (ch === "\\") i++;
			else if (ch === '"') inString = false;
			continue;
		}
		if (ch === '"') inString = true;
		else if (ch === "{") depth++;
		else if (ch === "}") {
			depth--;
			if (depth === 0) return text.slice(start, i + 1);
		}
	}
	return undefined;
}

/** The object written right after position `end` (skipping blanks and an optional ":"). */
function argumentsAfter(text: string, end: number): Record<string, unknown> | undefined {
	let i = end;
	while (i < text.length && /\s/.test(text[i] as string)) i++;
	if (text[i] === ":") {
		i++;
		while (i < text.length && /\s/.test(text[i] as string)) i++;
	}
	if (text[i] !== "{") return undefined;
	const candidate = balancedObjectAt(text, i);
	if (candidate === undefined) return undefined;
	try {
		const parsed: unknown = JSON.parse(candidate);
		return isRecord(parsed) ? parsed : undefined;
	} catch {
		return undefined;
	}
}

function firstType(schema: Record<string, unknown>): string | undefined {
	const type = schema.type;
	if (typeof type === "string") return type;
	if (Array.isArray(type)) return type.find((t): t is string => typeof t === "string" && t !== "null");
	return undefined;
}

/**
 * Arguments built from a JSON schema: each required property gets a placeholder by type — the
 * user's text for strings (the first value when the schema has an `enum`), 0 for numbers and
 * integers, false for booleans, [] for arrays, {} for objects, null for null. Properties that
 * are not required are left out.
 */
function argumentsFromSchema(parameters: unknown, userText: string): Record<string, unknown> {
	const out: Record<string, unknown> = {};
	if (!isRecord(parameters) || !Array.isArray(parameters.required)) return out;
	const properties = isRecord(parameters.properties) ? parameters.properties : {};
	for (const key of parameters.required) {
		if (typeof key !== "string") continue;
		const schema = properties[key];
		const prop = isRecord(schema) ? schema : {};
		if (Array.isArray(prop.enum) && prop.enum.length > 0) {
			out[key] = prop.enum[0];
			continue;
		}
		switch (firstType(prop)) {
			case "number":
			case "integer":
				out[key] = 0;
				break;
			case "boolean":
				out[key] = false;
				break;
			case "array":
				out[key] = [];
				break;
			case "object":
				out[key] = {};
				break;
			case "null":
				out[key] = null;
				break;
			default:
				out[key] = userText;
		}
	}
	return out;
}

export interface ToolPlanOptions {
	/** The request's `tool_choice`. "none" disables calls; a named function forces that call. */
	toolChoice?: unknown;
	/** The request's `parallel_tool_calls`; false keeps only the first call. */
	parallelToolCalls?: unknown;
}

/**
 * The tool calls for a user prompt: one per offered tool the prompt names, in the order the
 * names first appear. With `tool_choice: "required"` and no tool named, the first offered tool
 * is called; with a named `tool_choice`, exactly that tool is.
 */
export function planToolCalls(userText: string, tools: readonly OfferedTool[], options: ToolPlanOptions = {}): PlannedToolCall[] {
	if (tools.length === 0 || options.toolChoice === "none") return [];

	const found: { tool: OfferedTool; position: number; args: Record<string, unknown> | undefined }[] = [];
	for (const tool of tools) {
		const pattern = new RegExp(`(?<![A-Za-z0-9_-])${escapeRegExp(tool.name)}(?![A-Za-z0-9_-])`, "gi");
		let position = -1;
		let args: Record<string, unknown> | undefined;
		for (const match of userText.matchAll(pattern)) {
			if (position < 0) position = match.index;
			args = argumentsAfter(userText, match.index + match[0].length);
			if (args) break;
		}
		if (position >= 0) found.push({ tool, position, args });
	}
	found.sort((x, y) => x.position - y.position);

	let chosen = found;
	const choice = options.toolChoice;
	if (isRecord(choice) && isRecord(choice.function) && typeof choice.function.name === "string") {
		const forcedName = choice.function.name;
		const forced = tools.find(t => t.name === forcedName);
		if (!forced) return [];
		chosen = [found.find(f => f.tool === forced) ?? { tool: forced, position: 0, args: undefined }];
	} else if (choice === "required" && chosen.length === 0) {
		chosen = [{ tool: tools[0] as OfferedTool, position: 0, args: undefined }];
	}
	if (options.parallelToolCalls === false) chosen = chosen.slice(0, 1);

	return chosen.map(({ tool, args }) => ({
		name: tool.name,
		arguments: JSON.stringify(args ?? argumentsFromSchema(tool.parameters, userText))
	}));
}

/** Splits an arguments string into a few fragments (never inside a surrogate pair). */
export function argumentFragments(text: string, maxFragments = 4): string[] {
	if (text.length === 0) return [];
	const size = Math.max(4, Math.ceil(text.length / maxFragments));
	const out: string[] = [];
	let start = 0;
	while (start < text.length) {
		let end = Math.min(text.length, start + size);
		const code = text.charCodeAt(end - 1);
		if (end < text.length && code >= 0xd800 && code <= 0xdbff) end++;
		out.push(text.slice(start, end));
		start = end;
	}
	return out;
}
