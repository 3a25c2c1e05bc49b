/** tool_executions rows, written as one multi-row INSERT per batch on the node's Database. */
import type { Database } from "../../lib/db";
import type { Execution } from "./runner";

export interface ExecutionOrigin {
	userId: string;
	/** The assistant message that asked for the tools. */
	messageId?: string;
	generationId?: string;
}

const COLUMNS = ["message_id", "generation_id", "user_id", "tool_call_id", "tool_name", "input", "output", "duration_ms", "status"] as const;
const JSONB = new Set<string>(["input", "output"]);

export class ToolExecutionStore {
	constructor(private readonly db: Database) {}

	async insert(origin: ExecutionOrigin, executions: readonly Execution[]): Promise<void> {
		if (executions.length === 0) return;
		const bind: unknown[] = [];
		const rows = executions.map(({ result, inputJson, outputJson }) => {
			const values = [
				origin.messageId ?? null,
				origin.generationId ?? null,
				origin.userId,
				result.toolCallId ?? null,
				result.name,
				inputJson,
				outputJson,
				result.durationMs,
				result.status
			];
			const placeholders = values.map((value, i) => {
				bind.push(value);
				return JSONB.has(COLUMNS[i]) ? `$${bind.length}::jsonb` : `$${bind.length}`;
			});
			return `(${placeholders.join(", ")})`;
		});
		await this.db.query(`INSERT INTO tool_executions (${COLUMNS.join(", ")}) VALUES ${rows.join(", ")}`, bind);
	}
}
