/**
 * gateway: the HTTP face of chatmesh (moleculer-web). Resolves bearer credentials into the
 * caller, applies the cluster-wide rate limits, and sends every error through one handler that
 * maps it to its HTTP status and public shape. Which actions need a caller is declared on the
 * actions themselves (`auth`, `roles`) and enforced by the broker middleware in lib/auth.ts.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { Redis } from "ioredis";
import type { CallingOptions, Context, ServiceSchema } from "moleculer";
import ApiGateway, { type ApiSettingsSchema, type IncomingRequest } from "moleculer-web";
import type { Socket } from "socket.io";
import { CREDENTIALS_CHANGED_EVENT, type AuthUser, type ChatmeshMeta, type CredentialsChangedEvent } from "../../lib/auth";
import { ERR_INVALID_CREDENTIALS, ERR_INVALID_TOKEN, ERR_TOKEN_EXPIRED, UnauthorizedError } from "../../lib/errors";
import { redisOptions } from "../../lib/redis";
import { acceptRequestId } from "../../lib/request-context";
import { NODE_STOPPING_EVENT, runtimeOf } from "../../lib/runtime";
import type { ResolvedCredential } from "../user/user.service";
import type { JobEvent } from "../jobs/store";
import { JOB_EVENT } from "../jobs/events";
import { edgeMiddleware } from "./edge";
import { collectConnections, countHttpRequests } from "./http-metrics";
import { failureLog, retryAfterOf, toPublicError } from "./http-errors";
import { openAiError } from "./openai-compat";
import { DEFAULT_RATE_LIMITS, RateLimiter, type RateLimitSettings, type RouteClass } from "./rate-limit";
import { checkReadiness, type Readiness } from "./readiness";
import { ALIAS_RATE_CLASS, apiRoutes, loginEmail, RESPONSE_SENT, webAppAssets } from "./routes";
import { chatSocketHandlers } from "./socket-chat";
import { JobEventHub } from "./jobs-routes";
import { applyCredentialsChange } from "./socket-revocation";
import { createSocketServer } from "./sockets";
import { endStreamsForShutdown } from "./streaming";
import type { ChatmeshRoute, GatewayMethods, GatewayThis, GatewayVars } from "./types";

export interface Health {
	status: "ok";
	nodeID: string;
	uptimeS: number;
}

const HTTP_KEEPALIVE_TIMEOUT_MS = 65_000;

/**
 * Handlers that answer a request themselves end with the RESPONSE_SENT marker (routes.ts): the
 * request succeeded, so its span must not count it as failed. `true` is what moleculer-web's
 * rest action resolves with for an answered request.
 */
function answeredBySelf(_ctx: Context, err: Error): true {
	if (err === RESPONSE_SENT) return true;
	throw err;
}

const UUID_SEGMENT = /\/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?=\/|$)/gi;

/** A request as a span name: method and path, no query, ids folded (`POST /api/conversations/:id/messages`). */
export function requestSpanName(req: IncomingMessage): string {
	return `${req.method} ${(req.url ?? "/").split("?")[0].replace(UUID_SEGMENT, "/:id")}`;
}

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

	hooks: {
		// Moleculer resolves the action with what an error hook returns (its type says void).
		error: { rest: answeredBySelf as (ctx: Context, err: Error) => void }
	},

	actions: {
		/** moleculer-web's request action (its handler comes from the mixin): spans named so a collector can group them. */
		rest: {
			tracing: { spanName: (ctx: Context) => requestSpanName((ctx.params as { req: IncomingMessage }).req) }
		},

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
		},

		/** Credentials stopped holding, or roles changed: this node's sockets of theirs follow at once. */
		[CREDENTIALS_CHANGED_EVENT]: {
			params: { change: { type: "string" }, userId: { type: "string" } },
			handler(ctx: Context<CredentialsChangedEvent>) {
				if (!this.io) return;
				const touched = applyCredentialsChange(this.io, ctx.params);
				if (touched) this.logger.info("Sockets follow a credentials change", { change: ctx.params.change, userId: ctx.params.userId, sockets: touched });
			}
		},

		/** A job's progress or end: to the owner's sockets and the job's SSE streams on this node. */
		[JOB_EVENT]: {
			params: { jobId: { type: "string" }, ownerId: { type: "string" }, seq: { type: "number" }, type: { type: "string" }, data: { type: "object" } },
			handler(ctx: Context<JobEvent>) {
				this.jobEvents.dispatch(ctx.params, this.io);
			}
		}
	},

	methods: {
		/**
		 * Bearer access token or API key → the caller (no header: anonymous), then the request
		 * counts against its route class for that caller and address. moleculer-web calls this
		 * after onBeforeCall, so this is where the caller is first known.
		 */
		async authenticate(
			ctx: Context<unknown, ChatmeshMeta>,
			route: { opts: ChatmeshRoute },
			req: IncomingRequest,
			_res: ServerResponse,
			alias?: { handler?: unknown }
		) {
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
					if (resolved.expiresAt !== null && resolved.expiresAt <= Date.now()) throw new UnauthorizedError("Access token expired", ERR_TOKEN_EXPIRED);
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

		/** moleculer-web's own handler logs every 5xx with its stack before replying; replyError logs once, by kind. */
		errorHandler(req: IncomingRequest, res: ServerResponse, err: Error) {
			this.sendError(req, res, err);
		},

		/** The one way errors leave over HTTP: status from the type, public shape, headers kept. */
		async replyError(req: IncomingRequest, res: ServerResponse, err: Error, format: "chatmesh" | "openai") {
			if (err === RESPONSE_SENT) return;
			const ctx = req.$ctx as Context<unknown, ChatmeshMeta> | undefined;
			const requestId = ctx?.requestID ?? undefined;
			const body = toPublicError(err, requestId);
			const log = failureLog(body, err);
			if (log)
				this.logger[log.level]("Request failed", { requestId, method: req.method, path: (req.originalUrl ?? req.url ?? "").split("?")[0], ...log.fields });
			if (body.type === ERR_INVALID_CREDENTIALS) {
				const email = loginEmail(req);
				if (email) {
					const decision = await this.rateLimiter.recordLoginFailure(email, this.clientIp(req));
					if (decision && !decision.allowed && ctx) ctx.meta.$responseHeaders = { ...ctx.meta.$responseHeaders, ...RateLimiter.headers(decision) };
				}
			}
			if (res.headersSent) {
				// A stream already under way: end it; its client sees the stream stop.
				if (!res.writableEnded) res.end();
				return;
			}
			for (const [key, value] of Object.entries(ctx?.meta.$responseHeaders ?? {})) res.setHeader(key, value);
			const retryAfter = retryAfterOf(body);
			if (retryAfter !== undefined) res.setHeader("Retry-After", String(retryAfter));
			res.setHeader("Content-Type", "application/json; charset=utf-8");
			res.setHeader("X-Content-Type-Options", "nosniff");
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
		schema.settings = {
			...schema.settings,
			port: config.port,
			ip: config.host,
			routes: apiRoutes(config.bodyLimitBytes),
			assets: webAppAssets,
			// Every route: security headers, CORS, and the input checks on body and query.
			use: [edgeMiddleware(config.corsOrigins)],
			// A client's X-Request-Id names the request when it is acceptable; otherwise a fresh id does
			// (moleculer-web takes the header as it is, and answers it in X-Request-ID).
			rootCallOptions: ((options: CallingOptions, req: IncomingMessage) => {
				options.requestID = acceptRequestId(req.headers["x-request-id"]);
			}) as unknown as CallingOptions
		};
	},

	created() {
		const { config, generations } = runtimeOf(this.broker);
		if (!generations) throw new Error("gateway needs the generation log");
		this.generations = generations;
		this.sseStreams = new Set();
		this.jobEvents = new JobEventHub();
		this.trustProxy = config.trustProxy;
		this.redis = config.redisUrl ? new Redis({ ...redisOptions(config.redisUrl), lazyConnect: false }) : undefined;
		this.redis?.on("error", () => {
			// The limiter falls back to memory and says so; ioredis reconnects on its own.
		});
		const settings: RateLimitSettings = mergeRateLimits(DEFAULT_RATE_LIMITS, config.rateLimits, config.namespace);
		this.rateLimiter = new RateLimiter({ settings, redis: this.redis, logger: this.logger, metrics: this.broker.metrics });
	},

	/** After moleculer-web's own started(): its HTTP server is listening. */
	started() {
		const { config } = runtimeOf(this.broker);
		// Idle keep-alive connections stay open longer than the pools in front keep them (60 s for an
		// AWS ALB and nginx's upstream keepalive_timeout): a server that closes an idle connection
		// first races the client's next request on it, which then fails with a reset.
		this.server.keepAliveTimeout = HTTP_KEEPALIVE_TIMEOUT_MS;
		this.server.headersTimeout = HTTP_KEEPALIVE_TIMEOUT_MS + 1000;
		this.stopMetrics = [
			countHttpRequests(this.broker, this.server),
			collectConnections(this.broker, { sockets: () => this.io?.engine.clientsCount ?? 0, sseStreams: () => this.sseStreams.size })
		];
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
		for (const stop of this.stopMetrics ?? []) stop();
		// Close the sockets but leave the HTTP server to moleculer-web's own stopped().
		this.io?.disconnectSockets(true);
		this.io?.engine.close();
		await this.redis?.quit().catch(() => this.redis?.disconnect());
	}
};

function mergeRateLimits(defaults: RateLimitSettings, overrides: ReturnType<typeof runtimeOf>["config"]["rateLimits"], namespace: string): RateLimitSettings {
	return {
		keyPrefix: `${namespace}:rl`,
		perUser: { ...defaults.perUser, ...overrides?.perUser },
		perIp: { ...defaults.perIp, ...overrides?.perIp },
		loginFailures: { ...defaults.loginFailures, ...overrides?.loginFailures }
	};
}

export default GatewayService;
