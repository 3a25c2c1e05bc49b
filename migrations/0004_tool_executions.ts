/**
 * Tool executions: one row per tool call a model asked for, with what went in, what
 * came out and how long it took. message_id has no foreign key: messages is partitioned on a
 * composite key (id, created_at), so a plain uuid cannot reference it.
 */
import type { MigrationClient } from "../lib/db/migrate";

export async function up(db: MigrationClient): Promise<void> {
	await db.query(`
		CREATE TABLE tool_executions (
			id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
			message_id uuid,
			generation_id uuid,
			user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
			tool_call_id text,
			tool_name text NOT NULL,
			input jsonb,
			output jsonb,
			duration_ms integer,
			status text NOT NULL CHECK (status IN ('success', 'error', 'timeout')),
			created_at timestamptz DEFAULT now()
		)
	`);
	// A tool's recent executions (latency and error rates per tool).
	await db.query("CREATE INDEX tool_executions_tool_created_idx ON tool_executions (tool_name, created_at DESC)");
	// The tool calls of one assistant message.
	await db.query("CREATE INDEX tool_executions_message_idx ON tool_executions (message_id)");
}

export async function down(db: MigrationClient): Promise<void> {
	await db.query("DROP TABLE tool_executions");
}
