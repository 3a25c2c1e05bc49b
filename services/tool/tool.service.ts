/**
 * tool: the tools a model may call during a chat turn. `list` offers them as OpenAI
 * tool definitions; `executeBatch` runs one model step's calls in parallel, each under its own
 * timeout, and answers every call in order — a tool that fails, hangs, is unknown or gets bad
 * arguments becomes an error or timeout result for the model, never a failed batch. Every
 * execution is recorded in tool_executions. Tool outputs are untrusted and capped in size.
 *
 * Deployments add their own tools with `settings.extraTools` (modules as in ./registry.ts):
 *   broker.createService(extendService(ToolService, { settings: { extraTools: [weather] } }))   (lib/service.ts)
 */
import type { ActionSchema, Context, ServiceSchema } from "moleculer";
import { callerOf, type AuthUser, type ChatmeshMeta } from "../../lib/auth";
import { BadRequestError } from "../../lib/errors";
import type { ToolCall, ToolDefinition } from "../../lib/chat-protocol";
import { runtimeOf } from "../../lib/runtime";
import { ToolRegistry, type ToolModule } from "./registry";
import { increment, observe } from "../../lib/metrics";
import { runToolCall, type Execution, type ToolRequest, type ToolResult } from "./runner";
import { ToolExecutionStore, type ExecutionOrigin } from "./store";
import { BUILTIN_TOOLS } from "./tools";

export type { ToolResult } from "./runner";
export type { ToolContext, ToolModule, ToolParameters } from "./registry";

export interface ToolSettings {
	/** A tool's time limit unless it sets its own timeoutMs; its AbortSignal aborts then. */
	defaultTimeoutMs: number;
	/** Each output (result or error message) is cut to this many UTF-8 bytes, with a marker. */
	maxOutputBytes: number;
	/** More calls in one executeBatch is a 400. */
	maxCallsPerBatch: number;
	/** Longest arguments text a call may carry. */
	maxArgumentsChars: number;
	/** executeBatch's bulkhead: batches running at once on this node, and waiting beyond them. */
	batchConcurrency: number;
	batchQueueSize: number;
	/** Tools this deployment adds to the built-in ones. Kept out of the service's published settings. */
	extraTools: ToolModule[];
	$secureSettings: string[];
}

export interface ExecuteParams {
	name: string;
	arguments?: Record<string, unknown> | string;
	messageId?: string;
	generationId?: string;
	toolCallId?: string;
}

export interface ExecuteBatchParams {
	calls: ToolCall[];
	messageId?: string;
	generationId?: string;
}

interface ToolVars {
	registry: ToolRegistry;
	store: ToolExecutionStore;
}

interface ToolMethods {
	run(ctx: Ctx<unknown>, requests: ToolRequest[]): Promise<Execution[]>;
	record(origin: ExecutionOrigin, executions: Execution[]): Promise<void>;
}

type Ctx<P = Record<string, never>> = Context<P, ChatmeshMeta>;

const DEFAULT_TIMEOUT_MS = 10_000;
const MAX_ARGUMENTS_CHARS = 65_536;

const originParams = {
	messageId: { type: "uuid", optional: true },
	generationId: { type: "uuid", optional: true }
} as const;

const ToolService: ServiceSchema<ToolSettings, ToolMethods & Record<string, never>, ToolVars> = {
	name: "tool",

	settings: {
		defaultTimeoutMs: DEFAULT_TIMEOUT_MS,
		maxOutputBytes: 16_384,
		maxCallsPerBatch: 16,
		maxArgumentsChars: MAX_ARGUMENTS_CHARS,
		batchConcurrency: 32,
		batchQueueSize: 256,
		extraTools: [],
		$secureSettings: ["extraTools"]
	},

	actions: {
		/** The tools as OpenAI tool definitions, for offering to the model. */
		list: {
			params: {},
			handler(): ToolDefinition[] {
				return this.registry.definitions();
			}
		},

		/** Runs one tool as the caller and records it; the answer is a result even when the tool fails. */
		execute: {
			auth: "required",
			params: {
				name: { type: "string", min: 1, max: 64 },
				arguments: {
					type: "multi",
					optional: true,
					rules: [
						{ type: "object", maxProps: 100 },
						{ type: "string", max: MAX_ARGUMENTS_CHARS }
					]
				},
				toolCallId: { type: "string", optional: true, min: 1, max: 200 },
				...originParams
			},
			async handler(ctx: Ctx<ExecuteParams>): Promise<ToolResult> {
				const { name, arguments: args, toolCallId, messageId, generationId } = ctx.params;
				const user = callerOf(ctx);
				const [execution] = await this.run(ctx, [{ name, args, toolCallId }]);
				await this.record({ userId: user.id, messageId, generationId }, [execution]);
				return execution.result;
			}
		},

		/**
		 * Runs one model step's tool calls in parallel and answers them in call order. The rows are
		 * written after the batch in one INSERT; the results are returned even if that fails.
		 * The bulkhead and timeout are set in merged().
		 */
		executeBatch: {
			auth: "required",
			params: {
				calls: {
					type: "array",
					items: {
						type: "object",
						props: {
							id: { type: "string", min: 1, max: 200 },
							type: { type: "equal", value: "function", optional: true },
							function: {
								type: "object",
								props: { name: { type: "string", min: 1, max: 200 }, arguments: { type: "string", max: MAX_ARGUMENTS_CHARS } }
							}
						}
					}
				},
				...originParams
			},
			async handler(ctx: Ctx<ExecuteBatchParams>): Promise<ToolResult[]> {
				const { calls, messageId, generationId } = ctx.params;
				const user = callerOf(ctx);
				if (calls.length > this.settings.maxCallsPerBatch)
					throw new BadRequestError(`At most ${this.settings.maxCallsPerBatch} tool calls per batch, not ${calls.length}`, {
						field: "calls",
						max: this.settings.maxCallsPerBatch
					});
				const executions = await this.run(
					ctx,
					calls.map(c => ({ name: c.function.name, args: c.function.arguments, toolCallId: c.id }))
				);
				await this.record({ userId: user.id, messageId, generationId }, executions);
				return executions.map(e => e.result);
			}
		}
	},

	methods: {
		/** Runs the requests in parallel; runToolCall never rejects, so every call gets its result. */
		async run(ctx: Ctx<unknown>, requests: ToolRequest[]): Promise<Execution[]> {
			const user: AuthUser = callerOf(ctx);
			const { defaultTimeoutMs, maxOutputBytes } = this.settings;
			const call = (action: string, params: Record<string, unknown> | undefined, timeout: number) =>
				ctx.call(action, params, { timeout, meta: { user: { id: user.id, roles: user.roles } } });
			const executions = await Promise.all(
				requests.map(request => runToolCall(this.registry, request, { defaultTimeoutMs, maxOutputBytes, userId: user.id, call }))
			);
			for (const { result } of executions) {
				// The name comes from the model: only registered tools get their own label value.
				const tool = this.registry.get(result.name) ? result.name : "unknown";
				increment(this.broker, "toolExecutions", { tool, status: result.status });
				observe(this.broker, "toolDuration", result.durationMs / 1000, { tool });
			}
			return executions;
		},

		/** A lost audit row must not cost the model its results: a failed write is logged, not thrown. */
		async record(origin: ExecutionOrigin, executions: Execution[]): Promise<void> {
			try {
				await this.store.insert(origin, executions);
			} catch (err) {
				this.logger.error(`Could not record ${executions.length} tool execution(s)`, {
					...origin,
					tools: executions.map(e => e.result.name),
					error: (err as Error).message
				});
			}
		}
	},

	/**
	 * The bulkhead and call timeout of executeBatch from the (possibly overridden) settings. The
	 * schema object is shared by every broker of the process, so parts are replaced, never changed
	 * in place.
	 */
	merged(schema) {
		const settings = schema.settings as ToolSettings;
		const { config } = runtimeOf(this.broker);
		// Callers wait for the slowest tool, then the row write.
		const longestMs = Math.max(settings.defaultTimeoutMs, ...[...BUILTIN_TOOLS, ...(settings.extraTools ?? [])].map(t => t.timeoutMs ?? 0));
		type TimedAction = ActionSchema & { timeout?: number };
		const actions = schema.actions as Record<string, TimedAction>;
		schema.actions = {
			...actions,
			execute: { ...actions.execute, timeout: longestMs + config.requestTimeoutMs },
			executeBatch: {
				...actions.executeBatch,
				bulkhead: { enabled: true, concurrency: settings.batchConcurrency, maxQueueSize: settings.batchQueueSize },
				timeout: longestMs + config.requestTimeoutMs
			}
		} as typeof schema.actions;
	},

	created() {
		const database = runtimeOf(this.broker).database;
		if (!database) throw new Error("tool service needs the database");
		this.registry = new ToolRegistry([...BUILTIN_TOOLS, ...this.settings.extraTools]);
		this.store = new ToolExecutionStore(database);
	}
};

export default ToolService;
