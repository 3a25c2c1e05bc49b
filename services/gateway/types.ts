/**
 * The gateway service's own shape (its variables and methods), shared by the service file and its
 * route handlers.
 */
import type { Server as HttpServer, IncomingMessage, ServerResponse } from "node:http";
import type { Redis } from "ioredis";
import type { Context } from "moleculer";
import type { ApiRouteSchema, IncomingRequest } from "moleculer-web";
import type { Socket } from "socket.io";
import type { AuthUser, ChatmeshMeta } from "../../lib/auth";
import type { GenerationLog } from "../../lib/generations/log";
import type { JobEventHub } from "./jobs-routes";
import type { RateLimiter, RouteClass } from "./rate-limit";
import type { ChatServer } from "./sockets";

/** A route of ours: moleculer-web's schema plus the rate-limit class its requests count against. */
export interface ChatmeshRoute extends ApiRouteSchema {
	rateClass?: RouteClass;
}

export interface GatewayVars {
	rateLimiter: RateLimiter;
	redis?: Redis;
	trustProxy: boolean;
	io?: ChatServer;
	server: HttpServer;
	generations: GenerationLog;
	/** Open SSE responses, ended when the node stops. */
	sseStreams: Set<ServerResponse>;
	/** Stop the gateway's request counting and scrape collectors. */
	stopMetrics?: Array<() => void>;
	/** Live job events for this node's SSE streams. */
	jobEvents: JobEventHub;
}

export interface GatewayMethods {
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
	errorHandler(req: IncomingRequest, res: ServerResponse, err: Error): void;
	/** moleculer-web's: hands the error to the route's (or the gateway's) onError. */
	sendError(req: IncomingRequest, res: ServerResponse, err: Error): void;
}

export type GatewayThis = GatewayVars & GatewayMethods & { logger: Context["broker"]["logger"]; broker: Context["broker"] };
