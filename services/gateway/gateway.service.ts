/**
 * gateway: the HTTP face of chatmesh (moleculer-web). Resolves bearer credentials into the
 * caller, applies the cluster-wide rate limits, and sends every error through one handler that
 * maps it to its HTTP status and public shape. Which actions need a caller is declared on the
 * actions themselves (`auth`, `roles`) and enforced by the broker middleware in lib/auth.ts.
 */
import type { Server as HttpServer, IncomingMessage, ServerResponse } from "node:http";
import path from "node:path";
import { Redis } from "ioredis";
import type { Context, ServiceSchema } from "moleculer";
import ApiGateway, { type ApiRouteSchema, type ApiSettingsSchema, type IncomingRequest } from "moleculer-web";
import { callerOf, type AuthUser, type ChatmeshMeta } from "../../lib/auth";
import {
	BadRequestError,
	ERR_BAD_LAST_EVENT_ID,
	ERR_INVALID_CREDENTIALS,
	ERR_INVALID_TOKEN,
	ERR_TOKEN_EXPIRED,
	NotFoundError,
	UnauthorizedError
} from "../../lib/errors";
import type { GenerationLog } from "../../lib/generations/log";
import type { GenerationMeta } from "../../lib/generations/types";
import type { SendResult } from "../conversation/conversation.service";
import type { ModelInfo } from "../llm/llm.service";
import { conversationCompletion, modelList, openAiError, parseCompletionRequest, passthroughCompletion } from "./openai-compat";
import { chatSocketHandlers } from "./socket-chat";
import { endStreamsForShutdown, parseAfter, streamGenerationSse } from "./streaming";
import { redisOptions } from "../../lib/redis";
import { NODE_STOPPING_EVENT, runtimeOf } from "../../lib/runtime";
import type { ResolvedCredential } from "../user/user.service";
import { toPublicError } from "./http-errors";
import { DEFAULT_RATE_LIMITS, RateLimiter, type RateLimitSettings, type RouteClass } from "./rate-limit";
import { checkReadiness, type Readiness } from "./readiness";
import { createSocketServer } from "./sockets";
import type { Server as SocketServer, Socket } from "socket.io";

export interface Health {
	status: "ok";
	nodeID: string;
	uptimeS: number;
}

/** A route of ours: moleculer-web's schema plus the rate-limit class its requests count against. */
interface ChatmeshRoute extends ApiRouteSchema {
	rateClass?: RouteClass;
}

interface GatewayVars {
	rateLimiter: RateLimiter;
	redis?: Redis;
	trustProxy: boolean;
	io?: SocketServer;
	server: HttpServer;
	generations: GenerationLog;
	/** Open SSE responses, ended when the node stops. */
	sseStreams: Set<ServerResponse>;
}

interface GatewayMethods {
	authenticate(
		ctx: Context<unknown, ChatmeshMeta>,
		route: { opts: ChatmeshRoute },
		req: IncomingRequest,
		res: ServerResponse,
		alias?: { handler?: unknown }
	): Promise<AuthUser | null>;
	clientIp(req: IncomingMessage): string;
	socketIp(socket: Socket): string;
	limit(ctx: Context<unknown, ChatmeshMeta>, routeClass: RouteClass, ip: string, userId?: string): Promise<void>;
	replyError(req: IncomingRequest, res: ServerResponse, err: Error, format: "chatmesh" | "openai"): Promise<void>;
}

type GatewayThis = GatewayVars & GatewayMethods & { logger: Context["broker"]["logger"]; broker: Context["broker"] };

const jsonBody = (limitBytes: number) => ({ json: { limit: limitBytes, strict: true }, urlencoded: false });

/** The REST routes; body limits are filled in from config when the service is created. */
function apiRoutes(bodyLimitBytes: number): ChatmeshRoute[] {
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
				"POST conversations/:id/messages": sendMessage
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
				req,
				res,
				body,
				generations: this.generations,
				headers: ctx.meta.$responseHeaders ?? {},
				maxOutputTokens: runtimeOf(this.broker).config.quotaMaxOutputTokens
			};
			await (body.conversation_id ? conversationCompletion(deps) : passthroughCompletion(deps));
			next?.(RESPONSE_SENT);
		})
		.catch(err => next?.(err));
};

const v1Models: AliasHandler = function (req, res, next) {
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

/**
 * moleculer-web treats a function alias as middleware and looks for an action after it; ours
 * answer the request themselves, so they end with this marker instead of next(). It travels as a
 * 4xx-coded error (so moleculer-web does not log it) to replyError, which leaves the response alone.
 */
class ResponseSent extends Error {
	readonly code = 499;
	readonly type = "RESPONSE_SENT";
}
const RESPONSE_SENT = new ResponseSent("response already sent");

function wantsEventStream(req: IncomingMessage): boolean {
	return /\btext\/event-stream\b/.test(String(req.headers.accept ?? ""));
}

/** `POST /api/conversations/:id/messages`: SSE with `Accept: text/event-stream`, else 202 with the ids. */
const sendMessage: AliasHandler = function (req, res, next) {
	const ctx = req.$ctx as Context<unknown, ChatmeshMeta>;
	const params = req.$params as { id?: unknown; content?: unknown; model?: unknown };
	ctx
		.call<SendResult, Record<string, unknown>>("conversation.send", { conversationId: params.id, content: params.content, model: params.model })
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
const ALIAS_RATE_CLASS = new WeakMap<object, RouteClass>([[sendMessage, "chat"]]);

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
	if (email) RateLimiter.assertAllowed(await this.rateLimiter.checkLogin(email, ip));
}

async function loginSucceeded(this: GatewayThis, _ctx: Context, _route: unknown, req: IncomingRequest, _res: ServerResponse, data: unknown) {
	const email = loginEmail(req);
	if (email) await this.rateLimiter.loginSucceeded(email, this.clientIp(req));
	return data;
}

function loginEmail(req: IncomingRequest): string | undefined {
	if (req.$action?.name !== "user.login") return undefined;
	const email = (req as IncomingRequest & { body?: { email?: unknown } }).body?.email;
	return typeof email === "string" && email.length <= 254 ? email : undefined;
}

/** The web app in public/, served at `/` for whatever no route answers; its page may load only its own files. */
const webAppAssets = {
	folder: path.resolve(import.meta.dirname, "../../public"),
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

const GatewayService: ServiceSchema<ApiSettingsSchema, GatewayMethods & Record<string, never>, GatewayVars> = {
	name: "gateway",
	mixins: [ApiGateway],

	settings: {
		// Port, address and routes come from the node's config in created().
		port: 3000,
		ip: "0.0.0.0",
		logRequest: "debug",
		logResponse: "debug",
		logRequestParams: null,
		logRouteRegistration: "debug",
		routes: [],
		onError(this: GatewayThis, req: IncomingRequest, res: ServerResponse, err: Error) {
			void this.replyError(req, res, err, "chatmesh");
		}
	},

	actions: {
		health: {
			params: {},
			handler(): Health {
				return { status: "ok", nodeID: this.broker.nodeID, uptimeS: Math.round(process.uptime()) };
			}
		},

		ready: {
			params: {},
			async handler(ctx: Context<unknown, ChatmeshMeta>): Promise<Readiness> {
				const readiness = await checkReadiness(ctx, this.broker, runtimeOf(this.broker));
				if (readiness.status !== "ready") ctx.meta.$statusCode = 503;
				return readiness;
			}
		}
	},

	events: {
		/** The node is stopping: release long-lived client streams so they resume elsewhere. */
		[NODE_STOPPING_EVENT]() {
			endStreamsForShutdown(this.sseStreams);
			this.io?.disconnectSockets(true);
		}
	},

	methods: {
		/**
		 * Bearer access token or API key → the caller (no header: anonymous), then the request
		 * counts against its route class for that caller and address. moleculer-web calls this
		 * after onBeforeCall, so this is where the caller is first known.
		 */
		async authenticate(ctx: Context<unknown, ChatmeshMeta>, route: { opts: ChatmeshRoute }, req: IncomingRequest, _res: ServerResponse, alias?: { handler?: unknown }) {
			const handler = typeof alias?.handler === "function" ? alias.handler : undefined;
			const routeClass: RouteClass = (handler && ALIAS_RATE_CLASS.get(handler)) || route.opts.rateClass || "default";
			const ip = this.clientIp(req);
			const header = req.headers.authorization;
			let user: AuthUser | null = null;
			if (header) {
				try {
					const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
					if (!match) throw new UnauthorizedError("Authorization must be 'Bearer <token>'", ERR_INVALID_TOKEN);
					const resolved = await ctx.call<ResolvedCredential, { token: string }>("user.resolveToken", { token: match[1] });
					if (resolved.expiresAt !== null && resolved.expiresAt <= Date.now())
						throw new UnauthorizedError("Access token expired", ERR_TOKEN_EXPIRED);
					user = { id: resolved.user.id, roles: resolved.user.roles };
				} catch (err) {
					// A bad credential still counts against the address, so guessing costs requests.
					await this.limit(ctx, routeClass, ip);
					throw err;
				}
			}
			await this.limit(ctx, routeClass, ip, user?.id);
			return user;
		},

		clientIp(req: IncomingMessage) {
			if (this.trustProxy) {
				const forwarded = req.headers["x-forwarded-for"];
				const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(",")[0]?.trim();
				if (first) return first;
			}
			return req.socket.remoteAddress ?? "unknown";
		},

		socketIp(socket: Socket) {
			if (this.trustProxy) {
				const forwarded = socket.handshake.headers["x-forwarded-for"];
				const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(",")[0]?.trim();
				if (first) return first;
			}
			return socket.handshake.address || "unknown";
		},

		/** The one way errors leave over HTTP: status from the type, public shape, headers kept. */
		async replyError(req: IncomingRequest, res: ServerResponse, err: Error, format: "chatmesh" | "openai") {
			if (err === RESPONSE_SENT) return;
			const ctx = req.$ctx as Context<unknown, ChatmeshMeta> | undefined;
			const body = toPublicError(err, ctx?.requestID ?? undefined);
			if (body.code >= 500) this.logger.error("Request failed", { requestId: ctx?.requestID, url: req.url, err });
			if (body.type === ERR_INVALID_CREDENTIALS) {
				const email = loginEmail(req);
				if (email) {
					const decision = await this.rateLimiter.loginFailed(email, this.clientIp(req)).catch(() => undefined);
					if (decision && !decision.allowed && ctx) ctx.meta.$responseHeaders = { ...ctx.meta.$responseHeaders, ...RateLimiter.headers(decision) };
				}
			}
			if (res.headersSent) {
				// A stream already under way: end it; its client sees the stream stop.
				if (!res.writableEnded) res.end();
				return;
			}
			for (const [key, value] of Object.entries(ctx?.meta.$responseHeaders ?? {})) res.setHeader(key, value);
			res.setHeader("Content-Type", "application/json; charset=utf-8");
			res.writeHead(body.code);
			res.end(JSON.stringify(format === "openai" ? openAiError(body.code, body) : body));
		},

		async limit(ctx: Context<unknown, ChatmeshMeta>, routeClass: RouteClass, ip: string, userId?: string) {
			const decision = await this.rateLimiter.consume(routeClass, ip, userId);
			ctx.meta.$responseHeaders = { ...ctx.meta.$responseHeaders, ...RateLimiter.headers(decision) };
			RateLimiter.assertAllowed(decision);
		}
	},

	/** moleculer-web builds its routes in its own created(), so they are set from config here. */
	merged(schema) {
		const { config } = runtimeOf(this.broker);
		schema.settings = { ...schema.settings, port: config.port, ip: config.host, routes: apiRoutes(config.bodyLimitBytes), assets: webAppAssets };
	},

	created() {
		const { config, generations } = runtimeOf(this.broker);
		if (!generations) throw new Error("gateway needs the generation log");
		this.generations = generations;
		this.sseStreams = new Set();
		this.trustProxy = config.trustProxy;
		this.redis = config.redisUrl ? new Redis({ ...redisOptions(config.redisUrl), lazyConnect: false }) : undefined;
		this.redis?.on("error", () => {
			// The limiter falls back to memory and says so; ioredis reconnects on its own.
		});
		const settings: RateLimitSettings = mergeRateLimits(DEFAULT_RATE_LIMITS, config.rateLimits, config.namespace);
		this.rateLimiter = new RateLimiter({ settings, redis: this.redis, logger: this.logger });
	},

	/** After moleculer-web's own started(): its HTTP server is listening. */
	started() {
		const { config } = runtimeOf(this.broker);
		this.io = createSocketServer({
			broker: this.broker,
			server: this.server,
			rateLimiter: this.rateLimiter,
			clientIp: socket => this.socketIp(socket),
			maxPayloadBytes: config.bodyLimitBytes,
			handlers: {
				whoami: { rateClass: "default", handle: async socket => ({ user: socket.data.user }) },
				...chatSocketHandlers(this.broker, this.generations)
			}
		});
	},

	async stopped() {
		// Close the sockets but leave the HTTP server to moleculer-web's own stopped().
		this.io?.disconnectSockets(true);
		this.io?.engine.close();
		await this.redis?.quit().catch(() => this.redis?.disconnect());
	}
};

function mergeRateLimits(
	defaults: RateLimitSettings,
	overrides: ReturnType<typeof runtimeOf>["config"]["rateLimits"],
	namespace: string
): RateLimitSettings {
	return {
		keyPrefix: `${namespace}:rl`,
		perUser: { ...defaults.perUser, ...overrides?.perUser },
		perIp: { ...defaults.perIp, ...overrides?.perIp },
		loginFailures: { ...defaults.loginFailures, ...overrides?.loginFailures }
	};
}

export default GatewayService;
