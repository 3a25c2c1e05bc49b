/**
 * Conversations and their messages. Messages are range-partitioned by month on
 * created_at; chatmesh_ensure_message_partitions() creates months ahead (run here and by the
 * conversation service's daily schedule), and a default partition catches anything outside
 * them, so no insert ever fails for want of a partition.
 */
import type { MigrationClient } from "../lib/db/migrate";

export async function up(db: MigrationClient): Promise<void> {
	await db.query(`
		CREATE TABLE conversations (
			id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
			user_id uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
			title text,
			created_at timestamptz NOT NULL DEFAULT now(),
			updated_at timestamptz NOT NULL DEFAULT now(),
			deleted_at timestamptz,
			metadata jsonb NOT NULL DEFAULT '{}'::jsonb
		)
	`);
	// A user's conversations by creation time; the next, by activity over live ones, is what the newest-first list walks.
	await db.query("CREATE INDEX conversations_user_created_idx ON conversations (user_id, created_at DESC)");
	await db.query("CREATE INDEX conversations_user_updated_idx ON conversations (user_id, updated_at DESC, id DESC) WHERE deleted_at IS NULL");

	await db.query(`
		CREATE TABLE messages (
			id uuid NOT NULL DEFAULT gen_random_uuid(),
			conversation_id uuid NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
			user_id uuid NOT NULL,
			role text NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
			content text NOT NULL DEFAULT '',
			tool_calls jsonb,
			status text NOT NULL DEFAULT 'completed'
				CHECK (status IN ('streaming', 'completed', 'cancelled', 'failed', 'interrupted', 'blocked')),
			model text,
			prompt_tokens integer,
			completion_tokens integer,
			generation_id uuid,
			error jsonb,
			metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
			created_at timestamptz NOT NULL DEFAULT now(),
			updated_at timestamptz NOT NULL DEFAULT now(),
			PRIMARY KEY (id, created_at)
		) PARTITION BY RANGE (created_at)
	`);
	// A conversation's history in order.
	await db.query("CREATE INDEX messages_conversation_created_idx ON messages (conversation_id, created_at, id)");
	await db.query("CREATE INDEX messages_generation_idx ON messages (generation_id) WHERE generation_id IS NOT NULL");
	await db.query("CREATE INDEX messages_status_idx ON messages (status, created_at) WHERE status = 'streaming'");
	await db.query("CREATE TABLE messages_default PARTITION OF messages DEFAULT");

	// Creates the monthly partitions from the month of `start` for `months` months, under a
	// transaction-level advisory lock so nodes running the schedule together do not collide.
	await db.query(`
		CREATE FUNCTION chatmesh_ensure_message_partitions(start timestamptz, months integer) RETURNS integer
		LANGUAGE plpgsql AS $$
		DECLARE
			month_start date := date_trunc('month', start)::date;
			created integer := 0;
			name text;
		BEGIN
			PERFORM pg_advisory_xact_lock(hashtext('chatmesh:message-partitions'));
			FOR i IN 0 .. months - 1 LOOP
				name := format('messages_y%sm%s', to_char(month_start, 'YYYY'), to_char(month_start, 'MM'));
				IF to_regclass(name) IS NULL THEN
					EXECUTE format('CREATE TABLE %I PARTITION OF messages FOR VALUES FROM (%L) TO (%L)',
						name, month_start, (month_start + interval '1 month')::date);
					created := created + 1;
				END IF;
				month_start := (month_start + interval '1 month')::date;
			END LOOP;
			RETURN created;
		END
		$$
	`);
	await db.query("SELECT chatmesh_ensure_message_partitions(now() - interval '1 month', 5)");
}

export async function down(db: MigrationClient): Promise<void> {
	await db.query("DROP FUNCTION chatmesh_ensure_message_partitions(timestamptz, integer)");
	await db.query("DROP TABLE messages");
	await db.query("DROP TABLE conversations");
}
