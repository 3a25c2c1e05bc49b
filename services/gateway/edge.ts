/**
 * What every HTTP request passes before its route's handler, after its body is parsed: the
 * headers every answer carries, CORS, and the input checks of lib/input.ts on the body and the
 * query string. Registered once as the gateway's `use` middleware, so every route gets them.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { assertCleanInput } from "../../lib/input";

type Next = (err?: unknown) => void;
type RequestWithInput = IncomingMessage & { body?: unknown; query?: unknown };

const CORS_METHODS = "GET, POST, PUT, PATCH, DELETE";
const CORS_HEADERS = "Authorization, Content-Type, Last-Event-ID, X-Request-ID";
const CORS_EXPOSED = "RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset, Retry-After, X-Request-ID, X-Generation-Id, X-Message-Id";
const CORS_MAX_AGE_S = "600";

/**
 * CORS: only the configured origins (`*` for any) get `Access-Control-Allow-*` headers; with none
 * configured the API is same-origin only. A preflight always answers 204 (a browser refuses the
 * cross-origin call itself when the allow headers are missing), never reaches authentication.
 */
function applyCors(allowed: ReadonlySet<string>, req: IncomingMessage, res: ServerResponse): "answered" | "continue" {
	const origin = req.headers.origin;
	const allow = typeof origin === "string" && (allowed.has("*") || allowed.has(origin));
	if (allow) {
		res.setHeader("Access-Control-Allow-Origin", allowed.has("*") ? "*" : origin);
		res.setHeader("Vary", "Origin");
		res.setHeader("Access-Control-Expose-Headers", CORS_EXPOSED);
	}
	if (req.method !== "OPTIONS" || !req.headers["access-control-request-method"]) return "continue";
	if (allow) {
		res.setHeader("Access-Control-Allow-Methods", CORS_METHODS);
		res.setHeader("Access-Control-Allow-Headers", CORS_HEADERS);
		res.setHeader("Access-Control-Max-Age", CORS_MAX_AGE_S);
	}
	res.writeHead(204, { "Content-Length": "0" });
	res.end();
	return "answered";
}

export function edgeMiddleware(corsOrigins: readonly string[]) {
	const allowed = new Set(corsOrigins);
	return function edge(req: RequestWithInput, res: ServerResponse, next: Next): void {
		res.setHeader("X-Content-Type-Options", "nosniff");
		try {
			// A preflight is answered here and goes no further (moleculer-web waits on the response).
			if (applyCors(allowed, req, res) === "answered") return;
			assertCleanInput(req.body, "body");
			assertCleanInput(req.query, "query");
			next();
		} catch (err) {
			next(err);
		}
	};
}

/** Answers that carry credentials must never be stored by a cache on the way. */
export function noStore(_req: IncomingMessage, res: ServerResponse, next: Next): void {
	res.setHeader("Cache-Control", "no-store");
	next();
}
