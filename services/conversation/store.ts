/**
 * The conversation service's data, on the node's Database: conversations (soft-deleted with
 * deleted_at) and the month-partitioned messages. Messages are addressed by id and a one-millisecond created_at range (JavaScript dates hold
 * milliseconds, PostgreSQL microseconds), so an update touches one partition only.
 */
import type { Database } from "../../lib/db";
import type { FinalStatus, ToolCall, Usage } from "../../lib/chat-protocol";

export interface ConversationAttributes {
	id: string;
	userId: string;
	title: string | null;
	createdAt: Date;
	updatedAt: Date;
	deletedAt: Date | null;
	metadata: Record<string, unknown>;
}

const CONVERSATION_COLUMNS = `id, user_id AS "userId", title, created_at AS "createdAt", updated_at AS "updatedAt", deleted_at AS "deletedAt", metadata`;

/**
 * Conversations; the lookups every turn makes are prepared statements (see lib/db/prepared.ts).
 * A deleted conversation (deleted_at set) is gone for every read and write here.
 */
export class ConversationStore {
	constructor(private readonly db: Database) {}

	/** The user's conversation unless deleted; undefined when missing or someone else's. */
	async owned(userId: string, id: string): Promise<ConversationAttributes | undefined> {
		const [row] = await this.db.query<ConversationAttributes>({
			name: "conversation.owned",
			text: `SELECT ${CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL`,
			values: [id, userId]
		});
		return row;
	}

	async create(userId: string, title: string | null): Promise<ConversationAttributes> {
		const [row] = await this.db.query<ConversationAttributes>({
			name: "conversation.create",
			text: `INSERT INTO conversations (user_id, title) VALUES ($1, $2) RETURNING ${CONVERSATION_COLUMNS}`,
			values: [userId, title]
		});
		return row;
	}

	/** The user's live conversations, most recently active first, keyset-paginated on (updated_at, id). */
	async list(userId: string, limit: number, after?: { at: string; id: string }): Promise<ConversationAttributes[]> {
		return after
			? this.db.query<ConversationAttributes>(
					`SELECT ${CONVERSATION_COLUMNS} FROM conversations
					 WHERE user_id = $1 AND deleted_at IS NULL AND (updated_at, id) < ($3::timestamptz, $4::uuid)
					 ORDER BY updated_at DESC, id DESC LIMIT $2`,
					[userId, limit, after.at, after.id]
				)
			: this.db.query<ConversationAttributes>(
					`SELECT ${CONVERSATION_COLUMNS} FROM conversations WHERE user_id = $1 AND deleted_at IS NULL ORDER BY updated_at DESC, id DESC LIMIT $2`,
					[userId, limit]
				);
	}

	/** Keeps updated_at: a rename is not activity, so the conversation keeps its place in the list. */
	async rename(userId: string, id: string, title: string): Promise<void> {
		await this.db.query("UPDATE conversations SET title = $3 WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL", [id, userId, title]);
	}

	/** Soft delete: deleted_at is set and the rows stay (updated_at too) for retention jobs. */
	async remove(userId: string, id: string): Promise<void> {
		await this.db.query("UPDATE conversations SET deleted_at = now() WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL", [id, userId]);
	}
}

export interface ConversationView {
	id: string;
	title: string | null;
	createdAt: string;
	updatedAt: string;
	metadata: Record<string, unknown>;
}

export function conversationView(c: ConversationAttributes): ConversationView {
	return {
		id: c.id,
		title: c.title,
		createdAt: c.createdAt.toISOString(),
		updatedAt: c.updatedAt.toISOString(),
		metadata: c.metadata
	};
}

export type MessageRole = "system" | "user" | "assistant" | "tool";
export type MessageStatus = "streaming" | FinalStatus;

export interface MessageRow {
	id: string;
	conversation_id: string;
	user_id: string;
	role: MessageRole;
	content: string;
	tool_calls: ToolCall[] | null;
	status: MessageStatus;
	model: string | null;
	prompt_tokens: number | null;
	completion_tokens: number | null;
	generation_id: string | null;
	error: { code: string; message: string } | null;
	metadata: Record<string, unknown>;
	created_at: Date;
	updated_at: Date;
}

/** A message as the API shows it. */
export type MessageView = ReturnType<typeof messageView>;

export function messageView(m: MessageRow) {
	return {
		id: m.id,
		conversationId: m.conversation_id,
		role: m.role,
		content: m.content,
		toolCalls: m.tool_calls,
		status: m.status,
		model: m.model,
		usage: m.prompt_tokens === null ? null : { promptTokens: m.prompt_tokens, completionTokens: m.completion_tokens ?? 0 },
		generationId: m.generation_id,
		error: m.error,
		metadata: m.metadata,
		createdAt: m.created_at.toISOString()
	};
}

const MESSAGE_COLUMNS =
	"id, conversation_id, user_id, role, content, tool_calls, status, model, prompt_tokens, completion_tokens, generation_id, error, metadata, created_at, updated_at";

export interface NewTurn {
	/** Undefined starts a new conversation. */
	conversationId?: string;
	userId: string;
	content: string;
	model: string | null;
	generationId: string;
	metadata: Record<string, unknown>;
}

export interface MessageFinal {
	content: string;
	status: FinalStatus;
	model: string | null;
	usage: Usage | null;
	toolCalls?: ToolCall[] | null;
	/** The tools' answers, kept beside the calls in metadata. */
	toolResults?: unknown[] | null;
	error?: { code: string; message: string } | null;
	/** Titles the conversation when it has none yet (its first answer). */
	conversationTitle?: string | null;
}

export class MessageStore {
	constructor(private readonly db: Database) {}

	/**
	 * A turn's rows in one statement: the conversation (created, or its updated_at moved), the
	 * user's message and the assistant's placeholder one millisecond after it, so the answer sorts
	 * after its question. One statement is atomic without an explicit transaction, and one round
	 * trip instead of six. Undefined when `conversationId` names no conversation (any more).
	 */
	async startTurn(t: NewTurn): Promise<{ conversationId: string; question: MessageRow; answer: MessageRow } | undefined> {
		const conversation = t.conversationId
			? "UPDATE conversations SET updated_at = now() WHERE id = $6 RETURNING id"
			: "INSERT INTO conversations (user_id) VALUES ($1) RETURNING id";
		const rows = await this.db.query<MessageRow & { part: "question" | "answer" }>({
			name: t.conversationId ? "turn.start.existing" : "turn.start.new",
			text: `WITH at AS (SELECT date_trunc('milliseconds', clock_timestamp()) AS t),
			conversation AS (${conversation}),
			question AS (
				INSERT INTO messages (conversation_id, user_id, role, content, status, created_at)
				SELECT conversation.id, $1::uuid, 'user', $2::text, 'completed', at.t FROM conversation, at
				RETURNING ${MESSAGE_COLUMNS}
			),
			answer AS (
				INSERT INTO messages (conversation_id, user_id, role, content, status, model, generation_id, metadata, created_at)
				SELECT conversation.id, $1::uuid, 'assistant', '', 'streaming', $3::text, $4::uuid, $5::jsonb, at.t + interval '1 millisecond'
				FROM conversation, at
				RETURNING ${MESSAGE_COLUMNS}
			)
			SELECT 'question' AS part, * FROM question UNION ALL SELECT 'answer' AS part, * FROM answer`,
			values: [t.userId, t.content, t.model, t.generationId, JSON.stringify(t.metadata), ...(t.conversationId ? [t.conversationId] : [])]
		});
		const question = rows.find(r => r.part === "question");
		const answer = rows.find(r => r.part === "answer");
		if (!question || !answer) return undefined;
		const strip = ({ part: _part, ...row }: MessageRow & { part: string }): MessageRow => row;
		return { conversationId: question.conversation_id, question: strip(question), answer: strip(answer) };
	}

	/**
	 * Writes an assistant message's final state; only a message still streaming changes. With
	 * `conversationTitle`, the same statement titles the conversation if it has no title yet.
	 */
	async finish(id: string, createdAt: Date, final: MessageFinal): Promise<MessageRow | undefined> {
		const [row] = await this.db.query<MessageRow>({
			name: "turn.finish",
			text: `WITH finished AS (
				UPDATE messages SET content = $3, status = $4, model = coalesce($5, model), prompt_tokens = $6, completion_tokens = $7,
				  tool_calls = coalesce($8, tool_calls), error = $9, updated_at = now(),
				  metadata = CASE WHEN $10::jsonb IS NULL THEN metadata ELSE metadata || jsonb_build_object('toolResults', $10::jsonb) END
				WHERE id = $1 AND created_at >= $2 AND created_at < $2::timestamptz + interval '1 millisecond' AND status = 'streaming'
				RETURNING ${MESSAGE_COLUMNS}
			), titled AS (
				UPDATE conversations SET title = $11::text FROM finished
				WHERE $11::text IS NOT NULL AND conversations.id = finished.conversation_id AND conversations.title IS NULL
			)
			SELECT * FROM finished`,
			values: [
				id,
				createdAt,
				final.content,
				final.status,
				final.model,
				final.usage?.promptTokens ?? null,
				final.usage?.completionTokens ?? null,
				final.toolCalls ? JSON.stringify(final.toolCalls) : null,
				final.error ? JSON.stringify(final.error) : null,
				final.toolResults ? JSON.stringify(final.toolResults) : null,
				final.conversationTitle ?? null
			]
		});
		return row;
	}

	/** Keeps the text produced so far on a streaming message, so a crash loses little. */
	async saveProgress(id: string, createdAt: Date, content: string): Promise<void> {
		await this.db.query({
			name: "turn.progress",
			text: "UPDATE messages SET content = $3, updated_at = now() WHERE id = $1 AND created_at >= $2 AND created_at < $2::timestamptz + interval '1 millisecond' AND status = 'streaming'",
			values: [id, createdAt, content]
		});
	}

	/** A conversation's messages, newest first, keyset-paginated on (created_at, id). */
	async page(conversationId: string, limit: number, before?: { at: string; id: string }): Promise<MessageRow[]> {
		return before
			? this.db.query<MessageRow>({
					name: "messages.page.before",
					text: `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND (created_at, id) < ($3::timestamptz, $4::uuid)
					 ORDER BY created_at DESC, id DESC LIMIT $2`,
					values: [conversationId, limit, before.at, before.id]
				})
			: this.db.query<MessageRow>({
					name: "messages.page",
					text: `SELECT ${MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2`,
					values: [conversationId, limit]
				});
	}

	/** The latest messages of a conversation in chronological order: the model's context. */
	async context(conversationId: string, limit: number): Promise<MessageRow[]> {
		const rows = await this.page(conversationId, limit);
		return rows.reverse();
	}

	/** The user's own messages containing the query (case-insensitive), newest first, in live conversations. */
	async search(userId: string, query: string, limit: number): Promise<MessageRow[]> {
		const pattern = `%${query.replace(/[\\%_]/g, m => `\\${m}`)}%`;
		return this.db.query<MessageRow>(
			`SELECT ${MESSAGE_COLUMNS.split(", ")
				.map(c => `m.${c}`)
				.join(", ")} FROM messages m JOIN conversations c ON c.id = m.conversation_id
			 WHERE m.user_id = $1 AND c.user_id = $1 AND c.deleted_at IS NULL AND m.role IN ('user', 'assistant') AND m.content ILIKE $2
			 ORDER BY m.created_at DESC LIMIT $3`,
			[userId, pattern, limit]
		);
	}

	async byGeneration(generationId: string): Promise<MessageRow | undefined> {
		const [row] = await this.db.query<MessageRow>(`SELECT ${MESSAGE_COLUMNS} FROM messages WHERE generation_id = $1 LIMIT 1`, [generationId]);
		return row;
	}

	/** The ids of a turn already stored for this generation (a send made again after its node was lost). */
	async turnOf(generationId: string, userId: string): Promise<{ conversationId: string; questionId: string; answerId: string } | undefined> {
		const [row] = await this.db.query<{ conversation_id: string; question_id: string; answer_id: string }>(
			`SELECT a.conversation_id, q.id AS question_id, a.id AS answer_id FROM messages a
			 JOIN messages q ON q.conversation_id = a.conversation_id AND q.role = 'user' AND q.created_at = a.created_at - interval '1 millisecond'
			 WHERE a.generation_id = $1 AND a.user_id = $2 AND a.role = 'assistant' LIMIT 1`,
			[generationId, userId]
		);
		return row && { conversationId: row.conversation_id, questionId: row.question_id, answerId: row.answer_id };
	}

	/**
	 * Answers still `streaming` whose owner's lease (turn_leases, see leases.ts) has run out or
	 * never existed, oldest first; younger than `graceMs` they are left alone.
	 */
	async orphaned(graceMs: number, limit: number): Promise<MessageRow[]> {
		return this.db.query<MessageRow>({
			name: "turn.orphaned",
			text: `SELECT ${MESSAGE_COLUMNS} FROM messages m
			 WHERE m.status = 'streaming' AND m.role = 'assistant' AND m.created_at < now() - $1 * interval '1 millisecond'
			   AND NOT EXISTS (SELECT 1 FROM turn_leases l WHERE l.instance_id = m.metadata->>'ownerInstance' AND l.lease_until > now())
			 ORDER BY m.created_at LIMIT $2`,
			values: [graceMs, limit]
		});
	}

	async ensurePartitions(monthsAhead: number): Promise<number> {
		const [row] = await this.db.query<{ created: number }>("SELECT chatmesh_ensure_message_partitions(now(), $1) AS created", [monthsAhead + 1]);
		return row.created;
	}
}
