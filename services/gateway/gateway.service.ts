/**
 * gateway: the HTTP face of chatmesh (moleculer-web). Liveness and readiness here; REST, /v1 and
 * socket.io routes join as their services land. Every error leaves through one handler that maps
 * it to its HTTP status and public shape.
 */
import type { ServerResponse } from "node:http";
import type { Context, ServiceSchema } from "moleculer";
import ApiGateway, { type ApiSettingsSchema, type IncomingRequest } from "moleculer-web";
import { runtimeOf } from "../../lib/runtime";
import { toPublicError } from "./http-errors";
import { checkReadiness, type Readiness } from "./readiness";

export interface Health {
	status: "ok";
	nodeID: string;
	uptimeS: number;
}

interface ResponseMeta {
	$statusCode?: number;
	$responseHeaders?: Record<string, string>;
}

const GatewayService: ServiceSchema<ApiSettingsSchema> = {
	name: "gateway",
	mixins: [ApiGateway],

	settings: {
		// Overwritten from the node's config in created().
		port: 3000,
		ip: "0.0.0.0",
		logRequest: "debug",
		logResponse: "debug",
		logRequestParams: null,
		logRouteRegistration: "debug",
		routes: [
			{
				path: "/",
				mappingPolicy: "restrict",
				bodyParsers: false,
				aliases: {
					"GET health": "gateway.health",
					"GET ready": "gateway.ready"
				},
				callOptions: { retries: 0 }
			}
		],
		onError(this: { logger: { error: (...a: unknown[]) => void } }, req: IncomingRequest, res: ServerResponse, err: Error) {
			const ctx = req.$ctx as Context<unknown, ResponseMeta> | undefined;
			const body = toPublicError(err, ctx?.requestID ?? undefined);
			if (body.code >= 500) this.logger.error("Request failed", { requestId: ctx?.requestID, url: req.url, err });
			for (const [key, value] of Object.entries(ctx?.meta.$responseHeaders ?? {})) res.setHeader(key, value);
			res.setHeader("Content-Type", "application/json; charset=utf-8");
			res.writeHead(body.code);
			res.end(JSON.stringify(body));
		}
	},

	actions: {
		health: {
			params: {},
			handler(this: { broker: Context["broker"] }): Health {
				return { status: "ok", nodeID: this.broker.nodeID, uptimeS: Math.round(process.uptime()) };
			}
		},

		ready: {
			params: {},
			async handler(this: { broker: Context["broker"] }, ctx: Context<unknown, ResponseMeta>): Promise<Readiness> {
				const readiness = await checkReadiness(ctx, this.broker, runtimeOf(this.broker));
				if (readiness.status !== "ready") ctx.meta.$statusCode = 503;
				return readiness;
			}
		}
	},

	created() {
		const { config } = runtimeOf(this.broker);
		this.settings.port = config.port;
		this.settings.ip = config.host;
	}
};

export default GatewayService;
