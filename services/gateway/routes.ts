/**
 * The gateway's HTTP routes: moleculer-web aliases to actions, the handlers that answer a request
 * themselves (SSE streams, the OpenAI-compatible surface), the sign-in guards, and the web app.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { PUBLIC_DIR } from "../../lib/app-files";
import type { Context } from "moleculer";
import type { IncomingRequest } from "moleculer-web";
import { callerOf, type ChatmeshMeta } from "../../lib/auth";
import { BadRequestError, ERR_BAD_LAST_EVENT_ID, NotFoundError } from "../../lib/errors";
import type { GenerationMeta } from "../../lib/chat-protocol";
import { callSend } from "../conversation/client";
import type { ModelInfo } from "../llm/llm.service";
import { conversationCompletion, modelList, parseCompletionRequest, passthroughCompletion } from "./openai-compat";
import { RateLimiter, type RouteClass } from "./rate-limit";
import { noStore } from "./edge";
import { JOB_ALIASES } from "./jobs-routes";
import { RESPONSE_SENT } from "./response-sent";
import { parseAfter, streamGenerationSse } from "./streaming";
import type { ChatmeshRoute, GatewayThis } from "./types";

// inflate: false refuses compressed bodies with 415 instead of decompressing them (see README).
const jsonBody = (limitBytes: number) => ({ json: { limit: limitBytes, strict: true, inflate: false }, urlencoded: false });

/** The REST routes; body limits are filled in from config when the service is created. */
export function apiRoutes(bodyLimitBytes: number): ChatmeshRoute[] {
	return [
		{
			path: "/",
			mappingPolicy: "restrict",
			bodyParsers: false,
			aliases: { "GET health": "gateway.health", "GET ready": "gateway.ready" },
			callOptions: { retries: 0 }
		},
		{
			path: "/api/auth",
			rateClass: "auth",
			mappingPolicy: "restrict",
			bodyParsers: jsonBody(bodyLimitBytes),
			use: [noStore],
			aliases: {
				"POST register": "user.register",
				"POST login": "user.login",
				"POST refresh": "user.refresh",
				"POST logout": "user.logout"
			},
			onBeforeCall: loginGuard,
			onAfterCall: loginSucceeded
		},
		{
			path: "/api",
			rateClass: "default",
			authentication: true,
			mappingPolicy: "restrict",
			bodyParsers: jsonBody(bodyLimitBytes),
			aliases: {
				"GET me": "user.me",
				"GET keys": "user.listApiKeys",
				"POST keys": "user.createApiKey",
				"DELETE keys/:id": "user.revokeApiKey",
				"GET admin/users": "user.list",
				"PUT admin/users/:id/roles": "user.setRoles",
				"PUT admin/users/:id/status": "user.setStatus",
				"GET models": "llm.models",
				"GET usage": "quota.get",
				"PUT admin/users/:id/quota": "quota.setLimit",
				"GET conversations": "conversation.list",
				"POST conversations": "conversation.create",
				"GET conversations/:id": "conversation.get",
				"PATCH conversations/:id": "conversation.rename",
				"DELETE conversations/:id": "conversation.remove",
				"GET conversations/:id/messages": "conversation.messages",
				"GET generations/:id": "conversation.generation",
				"GET generations/:id/events": generationEvents,
				"POST generations/:id/cancel": "conversation.cancel",
				"POST conversations/:id/messages": sendMessage,
				...JOB_ALIASES
			}
		},
		{
			// OpenAI-compatible surface; errors in OpenAI's shape.
			path: "/v1",
			rateClass: "chat",
			authentication: true,
			mappingPolicy: "restrict",
			bodyParsers: jsonBody(bodyLimitBytes),
			aliases: { "POST chat/completions": chatCompletions, "GET models": v1Models },
			onError(this: GatewayThis, req: IncomingRequest, res: ServerResponse, err: Error) {
				void this.replyError(req, res, err, "openai");
			}
		}
	];
}

/** `POST /v1/chat/completions`: passthrough, or a stored turn when the body names a conversation. */
const chatCompletions: AliasHandler = function (req, res, next) {
	const ctx = req.$ctx as Context<unknown, ChatmeshMeta>;
	Promise.resolve()
		.then(async () => {
			callerOf(ctx);
			const body = parseCompletionRequest((req as IncomingRequest & { body?: unknown }).body);
			const deps = {
				ctx,
				res,
				body,
				generations: this.generations,
				headers: ctx.meta.$responseHeaders ?? {}
			};
			await (body.conversation_id ? conversationCompletion(deps) : passthroughCompletion(deps));
			next?.(RESPONSE_SENT);
		})
		.catch(err => next?.(err));
};

const v1Models: AliasHandler = (req, res, next) => {
	const ctx = req.$ctx as Context<unknown, ChatmeshMeta>;
	Promise.resolve()
		.then(async () => {
			callerOf(ctx);
			const models = await ctx.call<ModelInfo[]>("llm.models");
			res.writeHead(200, { ...ctx.meta.$responseHeaders, "Content-Type": "application/json; charset=utf-8" });
			res.end(JSON.stringify(modelList(models)));
			next?.(RESPONSE_SENT);
		})
		.catch(err => next?.(err));
};

type AliasHandler = (this: GatewayThis, req: IncomingRequest, res: ServerResponse, next?: (err?: unknown) => void) => void;

export { RESPONSE_SENT } from "./response-sent";

function wantsEventStream(req: IncomingMessage): boolean {
	return /\btext\/event-stream\b/.test(String(req.headers.accept ?? ""));
}

/** `POST /api/conversations/:id/messages`: SSE with `Accept: text/event-stream`, else 202 with the ids. */
const sendMessage: AliasHandler = function (req, res, next) {
	const ctx = req.$ctx as Context<unknown, ChatmeshMeta>;
	const params = req.$params as { id?: unknown; content?: unknown; model?: unknown };
	callSend(ctx, { conversationId: params.id, content: params.content, model: params.model })
		.then(async result => {
			if (wantsEventStream(req)) {
				await streamGenerationSse(
					this.generations,
					result.generationId,
					0,
					req,
					res,
					{ ...ctx.meta.$responseHeaders, "X-Generation-Id": result.generationId, "X-Message-Id": result.messageId },
					this.sseStreams
				);
			} else {
				res.writeHead(202, { ...ctx.meta.$responseHeaders, "Content-Type": "application/json; charset=utf-8" });
				res.end(JSON.stringify(result));
			}
			next?.(RESPONSE_SENT);
		})
		.catch(err => next?.(err));
};

/** Handlers whose requests count against another class than their route's. */
export const ALIAS_RATE_CLASS = new WeakMap<object, RouteClass>([[sendMessage, "chat"]]);

/** `GET /api/generations/:id/events`: replay after `Last-Event-ID` (or `?after=`), then live, as SSE. */
const generationEvents: AliasHandler = function (req, res, next) {
	const ctx = req.$ctx as Context<unknown, ChatmeshMeta>;
	const params = req.$params as { id?: unknown; after?: unknown };
	const after = parseAfter(req.headers["last-event-id"] ?? params.after);
	if (after === null) return next?.(new BadRequestError("Last-Event-ID must be a sequence number", { field: "Last-Event-ID" }, ERR_BAD_LAST_EVENT_ID));
	ctx
		.call<GenerationMeta | null, { id: unknown }>("conversation.generationMeta", { id: params.id })
		.then(async meta => {
			// Someone else's generation looks exactly like a missing one.
			if (!meta || meta.ownerId !== ctx.meta.user?.id) throw new NotFoundError("generation", String(params.id));
			await streamGenerationSse(this.generations, meta.generationId, after ?? 0, req, res, ctx.meta.$responseHeaders, this.sseStreams);
			next?.(RESPONSE_SENT);
		})
		.catch(err => next?.(err));
};

/** Sign-in attempts: the route-class limit, and a stricter one per email and address after failures. */
async function loginGuard(this: GatewayThis, ctx: Context<unknown, ChatmeshMeta>, route: { opts: ChatmeshRoute }, req: IncomingRequest) {
	const ip = this.clientIp(req);
	await this.limit(ctx, route.opts.rateClass ?? "auth", ip);
	const email = loginEmail(req);
	if (!email) return;
	const decision = await this.rateLimiter.checkLogin(email, ip);
	if (!decision.allowed) ctx.meta.$responseHeaders = { ...ctx.meta.$responseHeaders, ...RateLimiter.headers(decision) };
	RateLimiter.assertAllowed(decision);
}

async function loginSucceeded(this: GatewayThis, _ctx: Context, _route: unknown, req: IncomingRequest, _res: ServerResponse, data: unknown) {
	const email = loginEmail(req);
	if (email) await this.rateLimiter.loginSucceeded(email, this.clientIp(req));
	return data;
}

export function loginEmail(req: IncomingRequest): string | undefined {
	if (req.$action?.name !== "user.login") return undefined;
	const email = (req as IncomingRequest & { body?: { email?: unknown } }).body?.email;
	return typeof email === "string" && email.length <= 254 ? email : undefined;
}

/** The web app in public/, served at `/` for whatever no route answers; its page may load only its own files. */
export const webAppAssets = {
	folder: PUBLIC_DIR,
	options: {
		setHeaders(res: ServerResponse, file: string) {
			res.setHeader("X-Content-Type-Options", "nosniff");
			if (file.endsWith(".html"))
				res.setHeader(
					"Content-Security-Policy",
					"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
				);
		}
	}
};
