/**
 * The tools a node offers: each a module with a name, a description and a JSON Schema for its
 * arguments (what the model sees), and a run() that does the work. Schemas are compiled once,
 * when the service is created, so a broken schema stops the node at start rather than failing
 * the first call; arguments are checked against them before any tool runs.
 */
import { Ajv, type ValidateFunction } from "ajv";
import type { ToolDefinition } from "../../lib/chat-protocol";

/** What a running tool gets besides its arguments. */
export interface ToolContext {
	/** The user whose model asked for the tool; everything the tool reads must be theirs. */
	userId: string;
	/** Aborted when the tool's time is up: stop working and release what you hold. */
	signal: AbortSignal;
	/** Calls another action as the user (their id and roles in meta.user), bounded by the tool's timeout. */
	call<T = unknown>(action: string, params?: Record<string, unknown>): Promise<T>;
}

/** A JSON Schema for a tool's arguments: always an object, as OpenAI function calling expects. */
export interface ToolParameters {
	type: "object";
	properties?: Record<string, Record<string, unknown>>;
	required?: string[];
	additionalProperties?: boolean;
	[keyword: string]: unknown;
}

/**
 * One tool. `run` gets the arguments already validated against `parameters` (defaults filled
 * in) and returns any JSON-serializable value, which the model receives as JSON text; a thrown
 * error's message goes back to the model instead.
 */
export interface ToolModule<A = Record<string, unknown>> {
	/** Letters, digits, "_" and "-", at most 64 (OpenAI's rule for function names). */
	name: string;
	description: string;
	parameters: ToolParameters;
	/** Overrides the service's defaultTimeoutMs for this tool. */
	timeoutMs?: number;
	run(args: A, ctx: ToolContext): Promise<unknown>;
}

/** Types a tool module's arguments from its own declaration. */
export function defineTool<A>(tool: ToolModule<A>): ToolModule<A> {
	return tool;
}

export interface RegisteredTool {
	tool: ToolModule;
	/** Undefined when the arguments fit the schema (defaults are then filled in), else why not. */
	check(args: Record<string, unknown>): string | undefined;
}

const TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;

export class ToolRegistry {
	private readonly tools = new Map<string, RegisteredTool>();

	constructor(tools: readonly ToolModule[]) {
		// allErrors: the model gets every problem at once and can fix them in one retry.
		const ajv = new Ajv({ allErrors: true, strict: true, useDefaults: true });
		for (const tool of tools) {
			if (!TOOL_NAME.test(tool.name)) throw new Error(`tool name '${tool.name}' must be 1-64 letters, digits, '_' or '-'`);
			if (this.tools.has(tool.name)) throw new Error(`tool '${tool.name}' is registered twice`);
			if (typeof tool.run !== "function") throw new Error(`tool '${tool.name}' has no run function`);
			if (tool.parameters?.type !== "object") throw new Error(`tool '${tool.name}' parameters must be a JSON Schema of type "object"`);
			if (tool.timeoutMs !== undefined && !(Number.isInteger(tool.timeoutMs) && tool.timeoutMs > 0))
				throw new Error(`tool '${tool.name}' timeoutMs must be a positive whole number`);
			let validate: ValidateFunction;
			try {
				validate = ajv.compile(tool.parameters);
			} catch (err) {
				throw new Error(`tool '${tool.name}' has an invalid parameters schema: ${(err as Error).message}`);
			}
			this.tools.set(tool.name, {
				tool,
				check: args => (validate(args) ? undefined : ajv.errorsText(validate.errors, { dataVar: "arguments", separator: "; " }))
			});
		}
	}

	get(name: string): RegisteredTool | undefined {
		return this.tools.get(name);
	}

	get names(): string[] {
		return [...this.tools.keys()];
	}

	/** The tools as OpenAI tool definitions, to offer to a model. */
	definitions(): ToolDefinition[] {
		return [...this.tools.values()].map(({ tool }) => ({
			type: "function",
			function: { name: tool.name, description: tool.description, parameters: tool.parameters }
		}));
	}
}
