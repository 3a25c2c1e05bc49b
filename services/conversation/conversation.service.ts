/**
 * conversation: a user's conversations and messages, and the chat turn. `send` stores the user's
 * message before any model is called, answers with the ids at once, and runs the turn on this
 * node: moderation, quota, the model's stream into the generation log, the assistant message's
 * final state, the usage charged.
 */
import type { Readable } from "node:stream";
import type { Context, ServiceSchema } from "moleculer";
import { callerOf, type ChatmeshMeta } from "../../lib/auth";
import { decodeCursor, encodeCursor, pageOf } from "../../lib/cursor";
import { BadRequestError, ERR_MODEL_NOT_FOUND, ERR_UNAVAILABLE, NotFoundError, OUTAGE_RETRY_AFTER_S, UnavailableError } from "../../lib/errors";
import type { GenerationLog } from "../../lib/generations/log";
import type { ChatMessage, GenerationMeta } from "../../lib/chat-protocol";
import { runtimeOf } from "../../lib/runtime";
import { CacheCleanerMixin, scopedCacheKey, type CacheCleanerMethods } from "../../mixins/cache-cleaner.mixin";
import { ownedEntity, type OwnedEntity } from "../../middlewares/auth.middleware";
import { generateRules } from "../llm/params";
import { assertInputAllowed } from "../moderation/client";
import {
	conversationView,
	ConversationStore,
	MessageStore,
	messageView,
	type ConversationAttributes,
	type ConversationView,
	type MessageRow,
	type MessageView
} from "./store";
import { complete, type CompleteParams, type CompletionResult } from "./completion";
import { TurnLeases } from "./leases";
import { OrphanSweeper } from "./orphans";
import { drainTurns, Turn } from "./turn";
import { offeredTools, type TurnPlan } from "./turn-steps";
import { countPromptTokens } from "../../lib/token-count";
import { onScrape, recordChatRequest, setGauge } from "../../lib/metrics";

export interface SendParams {
	conversationId?: string;
	content: string;
	model?: string;
	/** Chosen by the caller so that a send made again after its node was lost is the same turn. */
	generationId?: string;
	/** This send was made before (its node was lost): a turn it already stored is answered as is. */
	retry?: boolean;
}

export interface SendResult {
	conversationId: string;
	messageId: string;
	assistantMessageId: string;
	generationId: string;
}

export interface SearchHit {
	conversationId: string;
	messageId: string;
	role: string;
	snippet: string;
	createdAt: string;
}

export interface GenerationStatus {
	generationId: string;
	conversationId: string;
	messageId: string;
	status: MessageView["status"];
	content: string;
	usage: MessageView["usage"];
}

interface ConversationSettings {
	/** How many earlier messages the model sees. */
	contextMessages: number;
	/** How long a cancelled turn waits for the llm node's own "cancelled" end. */
	cancelGraceMs: number;
	/** Monthly message partitions kept ready ahead of time. */
	partitionMonthsAhead: number;
}

interface ConversationVars {
	messages: MessageStore;
	conversations: ConversationStore;
	generations: GenerationLog;
	turns: Map<string, Turn>;
	leases: TurnLeases;
	orphans: OrphanSweeper;
	partitionTimer?: NodeJS.Timeout;
	sweepTimer?: NodeJS.Timeout;
	/** Removes this service's scrape collector. */
	stopMetrics?: () => void;
}

interface ConversationMethods extends CacheCleanerMethods {
	firstPage(userId: string): Promise<ConversationView[]>;
	conversationsAfter(userId: string, limit: number, after?: { at: string; id: string }): Promise<ConversationAttributes[]>;
	owned(userId: string, id: string): Promise<ConversationAttributes>;
	ownedConversation(id: string, ctx: Ctx): Promise<OwnedConversation | undefined>;
	generationMessage(id: string): Promise<OwnedMessage | undefined>;
	generationMeta(id: string): Promise<GenerationMeta | undefined>;
	cleanUserCache(userId: string, conversationId?: string): Promise<void>;
	ensurePartitions(): Promise<void>;
	sweepOrphans(): Promise<void>;
	abandonTurn(assistant: MessageRow, reservationId: string): Promise<void>;
}

type Ctx<P = Record<string, never>> = Context<P, ChatmeshMeta>;
type OwnedConversation = ConversationAttributes & OwnedEntity;
type OwnedMessage = MessageRow & OwnedEntity;

const uuid = { type: "uuid" } as const;
const pageParams = {
	limit: { type: "number", integer: true, min: 1, max: 100, default: 20, convert: true },
	cursor: { type: "string", optional: true, max: 200 }
} as const;

/** Leases run out this long ago are deleted (their answers were swept long before). */
const LEASE_RETENTION_MS = 3600_000;

/** How many conversations the cached first page holds. */
const FIRST_PAGE_SIZE = 100;
const firstPageKey = (userId: string) => `conversation.first:${userId}`;

/** Up to ~160 characters around the first match. */
function snippetOf(content: string, query: string): string {
	const at = content.toLowerCase().indexOf(query.toLowerCase());
	const start = Math.max(0, at - 60);
	const text = content
		.slice(start, start + 160)
		.replace(/\s+/g, " ")
		.trim();
	return `${start > 0 ? "…" : ""}${text}${start + 160 < content.length ? "…" : ""}`;
}

const ConversationService: ServiceSchema<ConversationSettings, ConversationMethods & Record<string, never>, ConversationVars> = {
	name: "conversation",
	mixins: [CacheCleanerMixin("conversation")],

	settings: {
		contextMessages: 40,
		cancelGraceMs: 5000,
		partitionMonthsAhead: 3
	},

	actions: {
		create: {
			auth: "required",
			params: { title: { type: "string", optional: true, max: 200, trim: true } },
			async handler(ctx: Ctx<{ title?: string }>): Promise<ConversationView> {
				const user = callerOf(ctx);
				const row = await this.conversations.create(user.id, ctx.params.title || null);
				await this.cleanUserCache(user.id);
				ctx.meta.$statusCode = 201;
				ctx.meta.$location = `/api/conversations/${row.id}`;
				return conversationView(row);
			}
		},

		/** The caller's conversations, most recently active first. */
		list: {
			auth: "required",
			params: pageParams,
			async handler(ctx: Ctx<{ cursor?: string; limit: number }>): Promise<{ items: ConversationView[]; nextCursor: string | null }> {
				const user = callerOf(ctx);
				// The first page is what clients ask for almost always: it is cached under one exact
				// key per user, so a write drops it without scanning the cache.
				if (!ctx.params.cursor && ctx.params.limit <= FIRST_PAGE_SIZE) {
					const first = await this.firstPage(user.id);
					const items = first.slice(0, ctx.params.limit);
					const last = items.at(-1);
					return { items, nextCursor: first.length > ctx.params.limit && last ? encodeCursor(new Date(last.updatedAt), last.id) : null };
				}
				const after = decodeCursor(ctx.params.cursor);
				const page = pageOf(await this.conversationsAfter(user.id, ctx.params.limit + 1, after), ctx.params.limit, c => ({ at: c.updatedAt, id: c.id }));
				return { items: page.items.map(conversationView), nextCursor: page.nextCursor };
			}
		},

		get: {
			auth: "required",
			params: { id: uuid },
			cache: {
				ttl: 60,
				keygen: (_a, _o, ctx) => {
					const c = ctx as Ctx<{ id: string }>;
					return scopedCacheKey("conversation.get", c.meta.user?.id ?? "-", c.params.id);
				}
			},
			owner: { resource: "conversation", load: "ownedConversation" },
			async handler(ctx: Ctx<{ id: string }>): Promise<ConversationView> {
				return conversationView(ownedEntity<OwnedConversation>(ctx));
			}
		},

		rename: {
			auth: "required",
			params: { id: uuid, title: { type: "string", min: 1, max: 200, trim: true } },
			owner: { resource: "conversation", load: "ownedConversation" },
			async handler(ctx: Ctx<{ id: string; title: string }>): Promise<ConversationView> {
				const user = callerOf(ctx);
				// Silent: a rename is not activity, so the conversation keeps its place in the list.
				await this.conversations.rename(user.id, ctx.params.id, ctx.params.title);
				await this.cleanUserCache(user.id, ctx.params.id);
				return conversationView(await this.owned(user.id, ctx.params.id));
			}
		},

		/** Soft delete: the conversation disappears for its owner at once; rows stay for retention jobs. */
		remove: {
			auth: "required",
			params: { id: uuid },
			owner: { resource: "conversation", load: "ownedConversation" },
			async handler(ctx: Ctx<{ id: string }>): Promise<void> {
				const user = callerOf(ctx);
				await this.conversations.remove(user.id, ctx.params.id);
				await this.cleanUserCache(user.id, ctx.params.id);
				ctx.meta.$statusCode = 204;
			}
		},

		/** A conversation's history, newest first. */
		messages: {
			auth: "required",
			params: { id: uuid, ...pageParams },
			owner: { resource: "conversation", load: "ownedConversation" },
			async handler(ctx: Ctx<{ id: string; cursor?: string; limit: number }>): Promise<{ items: MessageView[]; nextCursor: string | null }> {
				const before = decodeCursor(ctx.params.cursor);
				const rows = await this.messages.page(ctx.params.id, ctx.params.limit + 1, before);
				const page = pageOf(rows, ctx.params.limit, m => ({ at: m.created_at, id: m.id }));
				return { items: page.items.map(messageView), nextCursor: page.nextCursor };
			}
		},

		/** The caller's own messages that contain the query; the search tool's backend. */
		search: {
			auth: "required",
			params: {
				query: { type: "string", min: 1, max: 200, trim: true },
				limit: { type: "number", integer: true, min: 1, max: 50, default: 10, convert: true }
			},
			async handler(ctx: Ctx<{ query: string; limit: number }>): Promise<{ items: SearchHit[] }> {
				const rows = await this.messages.search(callerOf(ctx).id, ctx.params.query, ctx.params.limit);
				return {
					items: rows.map(r => ({
						conversationId: r.conversation_id,
						messageId: r.id,
						role: r.role,
						snippet: snippetOf(r.content, ctx.params.query),
						createdAt: r.created_at.toISOString()
					}))
				};
			}
		},

		/** Stores the user's message, starts the answer, and returns the ids without waiting for it. */
		send: {
			auth: "required",
			params: {
				conversationId: { type: "uuid", optional: true },
				// The longest accepted message, in characters.
				content: { type: "string", min: 1, max: 32_000 },
				model: { type: "string", optional: true, min: 1, max: 200 },
				generationId: { type: "uuid", optional: true },
				retry: { type: "boolean", optional: true }
			},
			async handler(ctx: Ctx<SendParams>): Promise<SendResult> {
				const user = callerOf(ctx);
				const content = ctx.params.content;
				if (ctx.params.retry && ctx.params.generationId) {
					const stored = await this.messages.turnOf(ctx.params.generationId, user.id);
					if (stored)
						return {
							conversationId: stored.conversationId,
							messageId: stored.questionId,
							assistantMessageId: stored.answerId,
							generationId: ctx.params.generationId
						};
				}
				if (!content.trim()) throw new BadRequestError("Message content is empty", { field: "content" });
				// Unknown models are refused before anything is stored.
				if (ctx.params.model) {
					const models = await ctx.call<Array<{ id: string }>>("llm.models");
					if (!models.some(m => m.id === ctx.params.model))
						throw new BadRequestError(`Unknown model '${ctx.params.model}'`, { model: ctx.params.model }, ERR_MODEL_NOT_FOUND);
				}
				// The owner check and the input policy read nothing of each other: one round trip, not two.
				// The tools to offer are asked for meanwhile too (offeredTools never rejects).
				const tools = offeredTools(this.broker);
				const [existing] = await Promise.all([
					ctx.params.conversationId ? this.owned(user.id, ctx.params.conversationId) : undefined,
					assertInputAllowed(ctx, content)
				]);

				// The model's context: the conversation so far and the new message. Its worst case is
				// reserved against the quota before anything is stored, so a refusal stores nothing.
				const history = existing ? await this.messages.context(existing.id, this.settings.contextMessages) : [];
				const context: ChatMessage[] = [
					...history.filter(m => m.status !== "blocked" && (m.role !== "assistant" || m.content)).map(m => ({ role: m.role, content: m.content })),
					{ role: "user", content }
				];
				const generationId = ctx.params.generationId ?? crypto.randomUUID();
				const firstReservation = `${generationId}:1`;
				await ctx.call("quota.reserve", {
					reservationId: firstReservation,
					tokens: countPromptTokens(context) + runtimeOf(this.broker).config.quotaMaxOutputTokens
				});

				const started = await this.messages
					.startTurn({
						conversationId: existing?.id,
						userId: user.id,
						content,
						model: ctx.params.model ?? null,
						generationId,
						// The lease this turn runs under (leases.ts): whoever holds it finishes the answer.
						metadata: { ownerNode: this.broker.nodeID, ownerInstance: this.leases.instanceId }
					})
					.then(turn => turn ?? Promise.reject(new NotFoundError("conversation", String(ctx.params.conversationId))))
					.catch(async (err: unknown) => {
						// Policy: the caller gets the storage error; a release that fails too is logged, and the
						// stale reservation is released later by the quota reset schedule.
						await ctx
							.call("quota.settle", { reservationId: firstReservation, usage: { promptTokens: 0, completionTokens: 0 } })
							.catch((settleErr: unknown) => this.logger.warn("Quota release failed", { reservationId: firstReservation, err: (settleErr as Error).message }));
						throw err;
					});
				const { conversationId, question: userMessage, answer: assistant } = started;

				const plan: TurnPlan = {
					userId: user.id,
					conversationId,
					generationId,
					assistant,
					model: ctx.params.model,
					firstTurn: !existing,
					userContent: content,
					context,
					firstReservation,
					tools
				};
				const [writer] = await Promise.all([
					this.generations.create({ generationId, ownerId: user.id, conversationId, messageId: assistant.id }).catch(async (err: unknown) => {
						// Policy: an answer without its log could reach no one, so it ends failed at once, its
						// hold is released, and the caller is told to retry (503).
						this.logger.warn("An answer's log could not be created; the turn is refused", { generationId, err: (err as Error).message });
						await this.abandonTurn(assistant, firstReservation);
						throw new UnavailableError("The answer could not be started; retry shortly", { retryAfter: OUTAGE_RETRY_AFTER_S });
					}),
					this.cleanUserCache(user.id, conversationId)
				]);
				const { config } = runtimeOf(this.broker);
				const turn = new Turn(plan, {
					broker: this.broker,
					logger: this.logger,
					messages: this.messages,
					writer,
					options: {
						maxOutputTokens: config.quotaMaxOutputTokens,
						maxToolSteps: config.maxToolSteps,
						cancelGraceMs: this.settings.cancelGraceMs,
						firstTokenTimeoutMs: config.llmFirstTokenTimeoutMs,
						idleTimeoutMs: config.llmIdleTimeoutMs
					},
					onStored: done => this.cleanUserCache(done.userId, done.conversationId)
				});
				this.turns.set(generationId, turn);
				// The turn outlives this request: it runs to its end with or without a client.
				void turn.start().finally(() => this.turns.delete(generationId));
				return { conversationId, messageId: userMessage.id, assistantMessageId: assistant.id, generationId };
			}
		},

		/**
		 * A stateless completion with a turn's checks (./completion.ts): every message judged, the
		 * quota reserved and settled, the output checked in windows. A stream of NDJSON
		 * `LlmStreamLine`s when `stream` is set (call it with `callCancellableStream`), else the answer.
		 */
		complete: {
			auth: "required",
			params: { ...generateRules, generationId: { type: "uuid" }, stream: { type: "boolean", optional: true } },
			handler(ctx: Ctx<CompleteParams>): Promise<Readable | CompletionResult> {
				const { config } = runtimeOf(this.broker);
				return complete(ctx, {
					maxOutputTokens: config.quotaMaxOutputTokens,
					firstTokenTimeoutMs: config.llmFirstTokenTimeoutMs,
					idleTimeoutMs: config.llmIdleTimeoutMs
				});
			}
		},

		/** Where a generation stands (also after its replay log expired). */
		generation: {
			auth: "required",
			params: { id: uuid },
			owner: { resource: "generation", load: "generationMessage" },
			async handler(ctx: Ctx<{ id: string }>): Promise<GenerationStatus> {
				const row = ownedEntity<OwnedMessage>(ctx);
				return {
					generationId: ctx.params.id,
					conversationId: row.conversation_id,
					messageId: row.id,
					status: row.status,
					content: row.content,
					usage: messageView(row).usage
				};
			}
		},

		/** The generation's owner and state, for gateways deciding who may watch it. */
		generationMeta: {
			visibility: "public",
			params: { id: uuid },
			async handler(ctx: Context<{ id: string }>): Promise<GenerationMeta | null> {
				return (await this.generationMeta(ctx.params.id)) ?? null;
			}
		},

		/** Stops a generation wherever it runs; its message ends cancelled with the text so far. */
		cancel: {
			auth: "required",
			params: { id: uuid },
			owner: { resource: "generation", load: "generationMeta" },
			async handler(ctx: Ctx<{ id: string }>): Promise<{ generationId: string; cancelled: boolean }> {
				const meta = ownedEntity<GenerationMeta & OwnedEntity>(ctx);
				if (meta.state === "finished") return { generationId: ctx.params.id, cancelled: false };
				await ctx.broadcast("generation.cancel", { generationId: ctx.params.id });
				return { generationId: ctx.params.id, cancelled: true };
			}
		}
	},

	events: {
		"generation.cancel": {
			params: { generationId: "string" },
			handler(ctx: Context<{ generationId: string }>) {
				this.turns.get(ctx.params.generationId)?.cancel();
			}
		},

		/** A dead llm node ends the turns it was producing, visibly, instead of leaving them hanging. */
		"$node.disconnected": {
			params: { node: "object" },
			handler(ctx: Context<{ node: { id: string }; unexpected?: boolean }>) {
				for (const turn of this.turns.values()) turn.nodeLost(ctx.params.node.id);
			}
		}
	},

	methods: {
		/** The user's conversation, or 404 — the same 404 whether it is missing or someone else's. */
		async owned(userId: string, id: string): Promise<ConversationAttributes> {
			const row = await this.conversations.owned(userId, id);
			if (!row) throw new NotFoundError("conversation", id);
			return row;
		},

		/** The `owner` flag's loaders (middlewares/auth.middleware.ts): the entity and its owner, or undefined. */
		async ownedConversation(id: string, ctx: Ctx): Promise<OwnedConversation | undefined> {
			const row = await this.conversations.owned(callerOf(ctx).id, id);
			return row && { ...row, ownerId: row.userId };
		},

		async generationMessage(id: string): Promise<OwnedMessage | undefined> {
			const row = await this.messages.byGeneration(id);
			return row && { ...row, ownerId: row.user_id };
		},

		generationMeta(id: string): Promise<GenerationMeta | undefined> {
			return this.generations.meta(id);
		},

		/** Exact keys only: dropping them costs one delete each, never a scan. */
		async cleanUserCache(userId: string, conversationId?: string) {
			const keys = [firstPageKey(userId)];
			if (conversationId) keys.push(scopedCacheKey("conversation.get", userId, conversationId));
			// Policy: the cache is an optimisation; entries that cannot be dropped (the cache store is
			// away) expire by their TTL, and the write that made them stale still succeeds.
			await this.cleanCache(keys).catch((err: unknown) =>
				this.logger.warn("Cache entries could not be dropped; they expire by themselves", { keys, err: (err as Error).message })
			);
		},

		/** The user's most recently active conversations (one more than a page, to tell if there are more). */
		async firstPage(userId: string): Promise<ConversationView[]> {
			const key = firstPageKey(userId);
			// With the cache store away this is a miss (lib/cacher.ts), and the page is read from the database.
			const cached = (await this.broker.cacher?.get(key)) as ConversationView[] | null | undefined;
			if (cached) return cached;
			const page = (await this.conversationsAfter(userId, FIRST_PAGE_SIZE + 1)).map(conversationView);
			await this.broker.cacher?.set(key, page, 60);
			return page;
		},

		async conversationsAfter(userId: string, limit: number, after?: { at: string; id: string }): Promise<ConversationAttributes[]> {
			return this.conversations.list(userId, limit, after);
		},

		/** Answers whose node stopped (its lease ran out) end interrupted, with their text, on whichever node sees them first. */
		async sweepOrphans() {
			try {
				const finished = await this.orphans.sweep();
				if (finished > 0) this.logger.warn(`Finished ${finished} answer(s) whose node stopped, as interrupted`);
				await this.leases.pruneExpired(LEASE_RETENTION_MS);
			} catch (err) {
				this.logger.warn("Orphaned answer sweep failed", { err: (err as Error).message });
			}
		},

		/** A turn that cannot start after its rows were stored: the answer ends failed and its hold is released. */
		async abandonTurn(assistant: MessageRow, reservationId: string) {
			const failed = { code: ERR_UNAVAILABLE, message: "The answer could not be started" };
			await this.messages
				.finish(assistant.id, assistant.created_at, { content: "", status: "failed", model: null, usage: null, error: failed })
				.catch((err: unknown) => this.logger.warn("An abandoned answer could not be ended; the orphan sweep ends it", { err: (err as Error).message }));
			await this.broker
				.call("quota.settle", { reservationId, usage: { promptTokens: 0, completionTokens: 0 } })
				.catch((err: unknown) => this.logger.warn("Quota release failed", { reservationId, err: (err as Error).message }));
		},

		async ensurePartitions() {
			try {
				const created = await this.messages.ensurePartitions(this.settings.partitionMonthsAhead);
				if (created > 0) this.logger.info(`Created ${created} message partition(s) ahead`);
			} catch (err) {
				this.logger.warn("Could not create message partitions ahead", err);
			}
		}
	},

	created() {
		const runtime = runtimeOf(this.broker);
		if (!runtime.database || !runtime.generations) throw new Error("conversation service needs the database and the generation log");
		this.messages = new MessageStore(runtime.database);
		this.conversations = new ConversationStore(runtime.database);
		this.generations = runtime.generations;
		this.turns = new Map();
		const { config } = runtime;
		this.leases = new TurnLeases(
			runtime.database,
			this.broker.instanceID,
			this.broker.nodeID,
			{ ttlMs: config.turnLeaseTtlMs, renewMs: Math.floor(config.turnLeaseTtlMs / 3) },
			this.logger
		);
		this.orphans = new OrphanSweeper(
			{
				messages: this.messages,
				generations: this.generations,
				settle: (reservationId, completionTokens) =>
					this.broker.call<{ charged: number }, { reservationId: string; usage: { promptTokens: number; completionTokens: number } }>("quota.settle", {
						reservationId,
						usage: { promptTokens: 0, completionTokens }
					}),
				logger: this.logger,
				// The node that ran it never counted it: the request ends here, interrupted.
				onFinished: row => recordChatRequest(this.broker, "interrupted", row.model, null, (Date.now() - row.created_at.getTime()) / 1000)
			},
			// A turn's model calls: the first and one after each tool round.
			{ maxSteps: config.maxToolSteps + 1, graceMs: config.turnLeaseTtlMs, batch: 50 }
		);
	},

	async started() {
		await this.ensurePartitions();
		// Idempotent and locked in the database, so every node may run it.
		this.partitionTimer = setInterval(() => void this.ensurePartitions(), 24 * 3600 * 1000);
		this.partitionTimer.unref();
		await this.leases.start();
		this.sweepTimer = setInterval(() => void this.sweepOrphans(), Math.floor(runtimeOf(this.broker).config.turnLeaseTtlMs / 3));
		this.sweepTimer.unref();
		// active_conversations: conversations with an answer streaming on this node, read at scrape time.
		this.stopMetrics = onScrape(this.broker, () =>
			setGauge(this.broker, "activeConversations", new Set(Array.from(this.turns.values(), turn => turn.plan.conversationId)).size)
		);
	},

	async stopped() {
		this.stopMetrics?.();
		clearInterval(this.partitionTimer);
		clearInterval(this.sweepTimer);
		await drainTurns(this.turns.values(), runtimeOf(this.broker).config.shutdownGraceMs);
		// Every answer of this node has ended: nothing is left for a sweep to finish.
		await this.leases.stop();
	}
};

export default ConversationService;
