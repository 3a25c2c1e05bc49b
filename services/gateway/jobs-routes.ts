/**
 * The jobs API on the gateway: aliases to the jobs actions, the result download, the SSE feed of
 * a job's events (replay after Last-Event-ID from the jobs table, then live from the `jobs.event`
 * broadcast), and the push of those events to the owner's sockets.
 */
import type { ServerResponse } from "node:http";
import type { Context } from "moleculer";
import type { IncomingRequest } from "moleculer-web";
import type { ChatmeshMeta } from "../../lib/auth";
import { BadRequestError, ERR_BAD_LAST_EVENT_ID } from "../../lib/errors";
import type { JobDocument } from "../jobs/kind";
import type { JobEventsResult } from "../jobs/jobs.service";
import type { JobEvent } from "../jobs/store";
import { RESPONSE_SENT } from "./response-sent";
import { userRoom } from "./socket-revocation";
import type { ChatServer } from "./sockets";
import { openSse, parseAfter } from "./streaming";
import type { GatewayThis } from "./types";

type AliasHandler = (this: GatewayThis, req: IncomingRequest, res: ServerResponse, next?: (err?: unknown) => void) => void;

/** This gateway's listeners of live job events, by job id (the SSE streams open here). */
export class JobEventHub {
	private readonly listeners = new Map<string, Set<(event: JobEvent) => void>>();

	subscribe(jobId: string, listener: (event: JobEvent) => void): () => void {
		let set = this.listeners.get(jobId);
		if (!set) {
			set = new Set();
			this.listeners.set(jobId, set);
		}
		set.add(listener);
		return () => {
			set.delete(listener);
			if (set.size === 0) this.listeners.delete(jobId);
		};
	}

	/** A job event arrived: to this node's SSE streams of the job and the owner's sockets here. */
	dispatch(event: JobEvent, io: ChatServer | undefined): void {
		for (const listener of this.listeners.get(event.jobId) ?? []) listener(event);
		io?.to(userRoom(event.ownerId)).emit(event.type, { ...event.data, jobId: event.jobId, seq: event.seq });
	}
}

/** `GET /api/jobs/:id/result`: the document, with its content type and a download file name. */
export const jobResult: AliasHandler = (req, res, next) => {
	const ctx = req.$ctx as Context<unknown, ChatmeshMeta>;
	const params = req.$params as { id?: unknown };
	ctx
		.call<JobDocument, { id: unknown }>("jobs.result", { id: params.id })
		.then(doc => {
			res.writeHead(200, {
				...ctx.meta.$responseHeaders,
				"Content-Type": doc.contentType,
				"Content-Disposition": contentDisposition(doc.filename),
				"Cache-Control": "private, no-store"
			});
			res.end(doc.content);
			next?.(RESPONSE_SENT);
		})
		.catch(err => next?.(err));
};

/** `GET /api/jobs/:id/events`: replay after `Last-Event-ID` (or `?after=`), then live, as SSE; ends after `job:done`. */
export const jobEvents: AliasHandler = function (req, res, next) {
	const ctx = req.$ctx as Context<unknown, ChatmeshMeta>;
	const params = req.$params as { id?: unknown; after?: unknown };
	const after = parseAfter(req.headers["last-event-id"] ?? params.after);
	if (after === null) return next?.(new BadRequestError("Last-Event-ID must be a sequence number", { field: "Last-Event-ID" }, ERR_BAD_LAST_EVENT_ID));
	const jobId = String(params.id);
	// Live events are listened for before the replay is read, and kept until it is written, so
	// none falls between the two; sequence numbers drop the ones the replay already had.
	const pending: JobEvent[] = [];
	let deliver: ((event: JobEvent) => void) | undefined;
	const unsubscribe = this.jobEvents.subscribe(jobId, event => (deliver ? deliver(event) : pending.push(event)));
	const readAll = async (from: number) => {
		const first = await ctx.call<JobEventsResult, { id: unknown; after: number }>("jobs.events", { id: params.id, after: from });
		const events = [...first.events];
		// Long jobs have many progress events: read on until a page comes back short.
		for (let page = first.events; page.length >= 1000; ) {
			page = (await ctx.call<JobEventsResult, { id: unknown; after: number }>("jobs.events", { id: params.id, after: page[page.length - 1].seq })).events;
			events.push(...page);
		}
		return events;
	};
	readAll(after ?? 0)
		.then(replay => {
			const { out, close } = openSse(res, ctx.meta.$responseHeaders ?? {}, this.sseStreams);
			let lastSeq = after ?? 0;
			let ended = false;
			const end = () => {
				if (ended) return;
				ended = true;
				close();
				unsubscribe();
			};
			const write = (event: JobEvent) => {
				if (ended || event.seq <= lastSeq) return;
				lastSeq = event.seq;
				out.write(`id: ${event.seq}\ndata: ${JSON.stringify({ type: event.type, ...event.data, seq: event.seq })}\n\n`);
				if (event.type === "job:done") {
					out.end("data: [DONE]\n\n");
					end();
				}
			};
			for (const event of replay) write(event);
			for (const event of pending.splice(0)) write(event);
			deliver = write;
			req.on("close", end);
			res.on("close", end);
			next?.(RESPONSE_SENT);
		})
		.catch(err => {
			unsubscribe();
			next?.(err);
		});
};

/** RFC 6266: an ASCII fallback name and the exact UTF-8 one. */
function contentDisposition(filename: string): string {
	const ascii = filename.replace(/[^\x20-\x7e]|["\\]/g, "_");
	return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(filename)}`;
}

/** The jobs aliases of the /api route. */
export const JOB_ALIASES = {
	"POST jobs": "jobs.submit",
	"GET jobs": "jobs.list",
	"GET jobs/:id": "jobs.get",
	"POST jobs/:id/cancel": "jobs.cancel",
	"GET jobs/:id/result": jobResult,
	"GET jobs/:id/events": jobEvents,
	"GET admin/jobs": "jobs.adminList",
	"POST admin/jobs/:id/retry": "jobs.retry",
	"POST admin/jobs/:id/discard": "jobs.discard"
} as const;
