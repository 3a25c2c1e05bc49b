/**
 * Turns any error that reaches the gateway into the one public shape
 * `{ name, message, code, type, data }` with its HTTP status. Errors with a known type keep their
 * message and data; anything else becomes a generic 500 carrying only the request id, so no stack
 * trace, SQL or internal message ever reaches a client.
 */
import {
	ERR_BAD_REQUEST,
	ERR_INTERNAL,
	ERR_UPSTREAM_BAD_REQUEST,
	ERR_UPSTREAM_ERROR,
	ERR_UPSTREAM_RATE_LIMITED,
	ERR_UPSTREAM_TIMEOUT,
	ERR_INVALID_JSON,
	ERR_PAYLOAD_TOO_LARGE,
	ERR_UNSUPPORTED_MEDIA_TYPE,
	httpStatusOf,
	OUTAGE_RETRY_AFTER_S,
	withOutageMapped
} from "../../lib/errors";

export interface PublicError {
	name: string;
	message: string;
	code: number;
	type: string;
	data?: unknown;
}

interface ErrorLike {
	name?: unknown;
	message?: unknown;
	type?: unknown;
	data?: unknown;
	status?: unknown;
	statusCode?: unknown;
}

/** body-parser reports its failures with these `type`s and a status. */
const BODY_PARSER_ERRORS: Readonly<Record<string, { type: string; message: string }>> = {
	"entity.parse.failed": { type: ERR_INVALID_JSON, message: "Request body is not valid JSON" },
	"entity.too.large": { type: ERR_PAYLOAD_TOO_LARGE, message: "Request body is too large" },
	// Request bodies are never compressed (see README): any Content-Encoding but identity is refused.
	"encoding.unsupported": { type: ERR_UNSUPPORTED_MEDIA_TYPE, message: "Unsupported Content-Encoding: send the body uncompressed" },
	"charset.unsupported": { type: ERR_UNSUPPORTED_MEDIA_TYPE, message: "Unsupported charset" },
	"request.aborted": { type: ERR_BAD_REQUEST, message: "Request aborted" },
	"request.size.invalid": { type: ERR_BAD_REQUEST, message: "Request size did not match Content-Length" }
};

export function toPublicError(original: unknown, requestId: string | undefined): PublicError {
	// A dependency that is down is a 503 to retry, whichever node or store reported it.
	const err = withOutageMapped(original);
	const e = (err ?? {}) as ErrorLike;
	const parserError = typeof e.type === "string" ? BODY_PARSER_ERRORS[e.type] : undefined;
	if (parserError) {
		const normalized = { type: parserError.type };
		return {
			name: "BadRequestError",
			message: parserError.message,
			code: httpStatusOf(normalized),
			type: parserError.type
		};
	}
	const status = httpStatusOf(err);
	if (status >= 500 && !isKnownServerError(e)) {
		return {
			name: "InternalError",
			message: "Internal server error",
			code: 500,
			type: ERR_INTERNAL,
			data: { requestId }
		};
	}
	return {
		name: typeof e.name === "string" ? e.name : "Error",
		message: typeof e.message === "string" ? e.message : "Error",
		code: status,
		type: typeof e.type === "string" && e.type ? e.type : ERR_BAD_REQUEST,
		data: e.data === undefined ? undefined : e.data
	};
}

/** A 5xx whose type we defined or Moleculer's own availability errors: safe to pass on. */
function isKnownServerError(e: ErrorLike): boolean {
	return typeof e.type === "string" && httpStatusOf({ type: e.type }) !== 500;
}

/** Seconds to wait before retrying a 503 (an outage, a full queue, an open breaker): its `Retry-After`. */
export function retryAfterOf(body: PublicError): number | undefined {
	if (body.code !== 503) return undefined;
	const retryAfter = (body.data as { retryAfter?: unknown } | undefined)?.retryAfter;
	return typeof retryAfter === "number" ? retryAfter : OUTAGE_RETRY_AFTER_S;
}

/** Failures the llm node already logged where their cause is known (one line per provider attempt). */
const LOGGED_UPSTREAM: ReadonlySet<string> = new Set([ERR_UPSTREAM_ERROR, ERR_UPSTREAM_TIMEOUT, ERR_UPSTREAM_RATE_LIMITED, ERR_UPSTREAM_BAD_REQUEST]);

export interface FailureLog {
	level: "error" | "warn";
	fields: Record<string, unknown>;
}

/**
 * How a failed request is logged, once: an unexpected error at ERROR with its stack (the 500's
 * requestId leads here); a known server-side kind (a dependency down, a full queue) at WARN with
 * its type and cause and no stack; nothing for client errors (4xx) and for upstream failures,
 * which the llm node logged with the provider's own words.
 */
export function failureLog(body: PublicError, original: unknown): FailureLog | undefined {
	if (body.code < 500 || LOGGED_UPSTREAM.has(body.type)) return undefined;
	if (body.type === ERR_INTERNAL) return { level: "error", fields: { status: body.code, err: original } };
	const cause = original as { message?: unknown; type?: unknown } | undefined;
	return {
		level: "warn",
		fields: {
			status: body.code,
			type: body.type,
			cause: typeof cause?.message === "string" ? cause.message : String(original),
			...(typeof cause?.type === "string" && cause.type !== body.type ? { causeType: cause.type } : {})
		}
	};
}
