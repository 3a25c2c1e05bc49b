/**
 * The chat events of the socket.io surface: send a message, watch (or resume) a generation, and
 * cancel one. Watching reads the node's generation log from a sequence number, so a socket that
 * reconnects to any gateway resumes exactly after the last chunk it saw.
 */
import type { ServiceBroker } from "moleculer";
import { BadRequestError, NotFoundError } from "../../lib/errors";
import type { GenerationLog, Unsubscribe } from "../../lib/generations/log";
import type { GenerationMeta } from "../../lib/chat-protocol";
import { callSend } from "../conversation/client";
import type { ChatSocket, SocketHandler } from "./sockets";
import { clientEvent } from "./streaming";
import type { RouteClass } from "./rate-limit";

const subscriptions = new WeakMap<ChatSocket, Map<string, Unsubscribe>>();

function watch(log: GenerationLog, socket: ChatSocket, generationId: string, afterSeq: number): void {
	let mine = subscriptions.get(socket);
	if (!mine) {
		const created = new Map<string, Unsubscribe>();
		subscriptions.set(socket, created);
		socket.on("disconnect", () => {
			for (const unsubscribe of created.values()) unsubscribe();
			created.clear();
		});
		mine = created;
	}
	// One watch per generation and socket: a repeated subscribe restarts from its `after`.
	mine.get(generationId)?.();
	const unsubscribe = log.subscribe(
		generationId,
		afterSeq,
		e => {
			const { name, payload } = clientEvent(generationId, e);
			socket.emit(name, payload);
		},
		() => mine.delete(generationId),
		err => {
			socket.emit("generation:error", { generationId, code: "STREAM_UNAVAILABLE", message: err.message });
			mine.delete(generationId);
		}
	);
	mine.set(generationId, unsubscribe);
}

function objectPayload(payload: unknown): Record<string, unknown> {
	if (!payload || typeof payload !== "object" || Array.isArray(payload)) throw new BadRequestError("The event payload must be an object");
	return payload as Record<string, unknown>;
}

export function chatSocketHandlers(broker: ServiceBroker, log: GenerationLog): Record<string, { rateClass: RouteClass; handle: SocketHandler }> {
	const as = (socket: ChatSocket) => ({ meta: { user: socket.data.user } });
	return {
		"chat:send": {
			rateClass: "chat",
			async handle(socket, payload) {
				const { conversationId, content, model } = objectPayload(payload);
				const result = await callSend(broker, { conversationId, content, model }, as(socket));
				watch(log, socket, result.generationId, 0);
				return result;
			}
		},
		"generation:subscribe": {
			rateClass: "default",
			async handle(socket, payload) {
				const { generationId, after } = objectPayload(payload);
				if (typeof generationId !== "string") throw new BadRequestError("generationId is required", { field: "generationId" });
				const afterSeq = after === undefined ? 0 : after;
				if (typeof afterSeq !== "number" || !Number.isInteger(afterSeq) || afterSeq < 0)
					throw new BadRequestError("after must be a sequence number (a whole number, 0 or more)", { field: "after" });
				const meta = await broker.call<GenerationMeta | null, { id: string }>("conversation.generationMeta", { id: generationId });
				// Someone else's generation looks exactly like a missing one.
				if (!meta || meta.ownerId !== socket.data.user.id) throw new NotFoundError("generation", generationId);
				watch(log, socket, generationId, afterSeq);
				return { ok: true, generationId, state: meta.state };
			}
		},
		"generation:cancel": {
			rateClass: "default",
			async handle(socket, payload) {
				const { generationId } = objectPayload(payload);
				return broker.call("conversation.cancel", { id: generationId }, as(socket));
			}
		}
	};
}
