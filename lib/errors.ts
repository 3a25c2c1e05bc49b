/**
 * chatmesh's error classes and their stable `type` codes. Client errors are never retried by
 * Moleculer; server errors are only retried where a class says so. Errors cross NATS as plain
 * objects, so `ChatmeshRegenerator` rebuilds them into their classes on the calling node. The
 * gateway maps types to HTTP statuses through `httpStatusOf`, the only such mapping.
 */
import { Errors } from "moleculer";

const { MoleculerError, MoleculerClientError, Regenerator } = Errors;

// Stable type codes (the constant is ERR_X, the wire value is X, as in moleculer-web).
export const ERR_BAD_REQUEST = "BAD_REQUEST";
export const ERR_INVALID_JSON = "INVALID_JSON";
export const ERR_VALIDATION = "VALIDATION_ERROR"; // Moleculer's own validator type
export const ERR_UNAUTHORIZED = "UNAUTHORIZED";
export const ERR_INVALID_CREDENTIALS = "INVALID_CREDENTIALS";
export const ERR_INVALID_TOKEN = "INVALID_TOKEN";
export const ERR_TOKEN_EXPIRED = "TOKEN_EXPIRED";
export const ERR_TOKEN_REVOKED = "TOKEN_REVOKED";
export const ERR_ACCOUNT_DISABLED = "ACCOUNT_DISABLED";
export const ERR_WEAK_PASSWORD = "WEAK_PASSWORD";
export const ERR_EMAIL_TAKEN = "EMAIL_TAKEN";
export const ERR_FORBIDDEN = "FORBIDDEN";
export const ERR_NOT_FOUND = "NOT_FOUND";
export const ERR_CONFLICT = "CONFLICT";
export const ERR_PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE";
export const ERR_RATE_LIMITED = "RATE_LIMITED";
export const ERR_QUOTA_EXCEEDED = "QUOTA_EXCEEDED";
export const ERR_CONTENT_BLOCKED = "CONTENT_BLOCKED";
export const ERR_UNAVAILABLE = "SERVICE_UNAVAILABLE";
export const ERR_UPSTREAM_ERROR = "UPSTREAM_ERROR";
export const ERR_UPSTREAM_RATE_LIMITED = "UPSTREAM_RATE_LIMITED";
export const ERR_UPSTREAM_TIMEOUT = "UPSTREAM_TIMEOUT";
export const ERR_UPSTREAM_BAD_REQUEST = "UPSTREAM_BAD_REQUEST";
export const ERR_MODEL_NOT_FOUND = "MODEL_NOT_FOUND";
export const ERR_INTERNAL = "INTERNAL_ERROR";
export const ERR_BAD_LAST_EVENT_ID = "BAD_LAST_EVENT_ID";
// How a streamed answer ended when it did not complete (generation events, SSE/socket error frames).
export const ERR_CANCELLED = "CANCELLED";
export const ERR_INTERRUPTED = "INTERRUPTED";
export const ERR_STREAM_INTERRUPTED = "STREAM_INTERRUPTED";
export const ERR_STREAM_UNAVAILABLE = "STREAM_UNAVAILABLE";
export const ERR_NESTING_TOO_DEEP = "NESTING_TOO_DEEP";
export const ERR_INVALID_CURSOR = "INVALID_CURSOR";
export const ERR_UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE";
// Durable jobs.
export const ERR_UNKNOWN_JOB_KIND = "UNKNOWN_JOB_KIND";
export const ERR_JOB_FINISHED = "JOB_FINISHED";
export const ERR_JOB_NOT_DEAD = "JOB_NOT_DEAD";
export const ERR_TOO_MANY_JOBS = "TOO_MANY_JOBS";
export const ERR_NO_JOB_RESULT = "NO_JOB_RESULT";

/** Each known type's HTTP status. Moleculer's and moleculer-web's own types are included. */
const HTTP_STATUS_BY_TYPE: Readonly<Record<string, number>> = {
	[ERR_BAD_REQUEST]: 400,
	[ERR_INVALID_JSON]: 400,
	[ERR_VALIDATION]: 422,
	[ERR_UNAUTHORIZED]: 401,
	[ERR_INVALID_CREDENTIALS]: 401,
	[ERR_INVALID_TOKEN]: 401,
	[ERR_TOKEN_EXPIRED]: 401,
	[ERR_TOKEN_REVOKED]: 401,
	[ERR_ACCOUNT_DISABLED]: 403,
	[ERR_WEAK_PASSWORD]: 400,
	[ERR_EMAIL_TAKEN]: 409,
	[ERR_FORBIDDEN]: 403,
	[ERR_NOT_FOUND]: 404,
	[ERR_CONFLICT]: 409,
	[ERR_PAYLOAD_TOO_LARGE]: 413,
	[ERR_RATE_LIMITED]: 429,
	[ERR_QUOTA_EXCEEDED]: 429,
	[ERR_CONTENT_BLOCKED]: 400,
	[ERR_UNAVAILABLE]: 503,
	[ERR_UPSTREAM_ERROR]: 502,
	[ERR_UPSTREAM_RATE_LIMITED]: 429,
	[ERR_UPSTREAM_TIMEOUT]: 504,
	[ERR_UPSTREAM_BAD_REQUEST]: 400,
	[ERR_MODEL_NOT_FOUND]: 400,
	[ERR_INTERNAL]: 500,
	[ERR_BAD_LAST_EVENT_ID]: 400,
	[ERR_CANCELLED]: 409,
	[ERR_INTERRUPTED]: 502,
	[ERR_STREAM_INTERRUPTED]: 502,
	[ERR_STREAM_UNAVAILABLE]: 503,
	[ERR_NESTING_TOO_DEEP]: 400,
	[ERR_INVALID_CURSOR]: 400,
	[ERR_UNKNOWN_JOB_KIND]: 422,
	[ERR_JOB_FINISHED]: 409,
	[ERR_JOB_NOT_DEAD]: 409,
	[ERR_TOO_MANY_JOBS]: 429,
	[ERR_NO_JOB_RESULT]: 404,
	// moleculer-web
	NO_TOKEN: 401,
	[ERR_UNSUPPORTED_MEDIA_TYPE]: 415,
	SERVICE_NOT_FOUND: 404,
	ENTITY_TOO_LARGE: 413,
	// moleculer core
	SERVICE_NOT_AVAILABLE: 503,
	REQUEST_TIMEOUT: 504,
	QUEUE_FULL: 503,
	REQUEST_REJECTED: 503,
	REQUEST_SKIPPED: 503
};

export type ErrorData = Record<string, unknown> | undefined;

/** A 4xx: the caller's fault, never retried, its message safe to show. */
export class ChatmeshClientError extends MoleculerClientError {
	constructor(message: string, type: string, data?: ErrorData) {
		super(message, HTTP_STATUS_BY_TYPE[type] ?? 400, type, data);
		// Each subclass is named after itself: the name is what the regenerator rebuilds it by.
		this.name = new.target.name;
	}
}

/** A 5xx that must not be retried blindly (Moleculer retries retryable errors). */
export class ChatmeshServerError extends MoleculerError {
	constructor(message: string, type: string, data?: ErrorData, retryable = false) {
		super(message, HTTP_STATUS_BY_TYPE[type] ?? 500, type, data);
		this.name = new.target.name;
		this.retryable = retryable;
	}
}

export class BadRequestError extends ChatmeshClientError {
	constructor(message: string, data?: ErrorData, type: string = ERR_BAD_REQUEST) {
		super(message, type, data);
	}
}

/** 401: no credentials, or credentials that do not hold; `type` says which. */
export class UnauthorizedError extends ChatmeshClientError {
	constructor(message = "Authentication required", type: string = ERR_UNAUTHORIZED, data?: ErrorData) {
		super(message, type, data);
	}
}

export class ForbiddenError extends ChatmeshClientError {
	constructor(message = "Forbidden", data?: ErrorData) {
		super(message, ERR_FORBIDDEN, data);
	}
}

/** A missing resource, and equally another user's resource: the two must be indistinguishable. */
export class NotFoundError extends ChatmeshClientError {
	constructor(resource: string, id?: string | number) {
		super(`${resource} not found`, ERR_NOT_FOUND, id === undefined ? { resource } : { resource, id });
	}
}

export class ConflictError extends ChatmeshClientError {
	constructor(message: string, data?: ErrorData) {
		super(message, ERR_CONFLICT, data);
	}
}

export class RateLimitedError extends ChatmeshClientError {
	constructor(retryAfterSeconds: number, data?: ErrorData) {
		super("Too many requests", ERR_RATE_LIMITED, { ...data, retryAfter: retryAfterSeconds });
	}
}

export class QuotaExceededError extends ChatmeshClientError {
	constructor(resetAt: string, data?: ErrorData) {
		super("Token quota exceeded", ERR_QUOTA_EXCEEDED, { ...data, resetAt });
	}
}

export class ContentBlockedError extends ChatmeshClientError {
	constructor(message: string, data?: ErrorData) {
		super(message, ERR_CONTENT_BLOCKED, data);
	}
}

export class UnavailableError extends ChatmeshServerError {
	constructor(message: string, data?: ErrorData) {
		super(message, ERR_UNAVAILABLE, data);
	}
}

/** A model provider failed; `type` says how (rate limit, timeout, bad request, other). */
export class UpstreamError extends ChatmeshServerError {
	constructor(message: string, type: string = ERR_UPSTREAM_ERROR, data?: ErrorData) {
		super(message, type, data);
	}
}

type PlainError = Errors.PlainMoleculerError;

/** Every class a remote node may send, by `name`. */
const ERROR_CLASSES: Readonly<Record<string, { prototype: Errors.MoleculerError }>> = {
	ChatmeshClientError,
	ChatmeshServerError,
	BadRequestError,
	UnauthorizedError,
	ForbiddenError,
	NotFoundError,
	ConflictError,
	RateLimitedError,
	QuotaExceededError,
	ContentBlockedError,
	UnavailableError,
	UpstreamError
};

/** Rebuilds chatmesh's errors into their own classes when they arrive from another node. */
export class ChatmeshRegenerator extends Regenerator {
	override restoreCustomError(plain: PlainError): Error {
		const errorClass = ERROR_CLASSES[plain.name];
		// The base class treats a falsy result as "not custom" and falls back to its own table.
		if (!errorClass) return undefined as unknown as Error;
		// Field by field rather than through the constructor, so nothing a constructor derives
		// (message text, data defaults) differs from what the producing node sent.
		const { name, message, code, type, data, retryable } = plain;
		return Object.assign(Object.create(errorClass.prototype) as Errors.MoleculerError, {
			name,
			message,
			code,
			type,
			data,
			retryable
		});
	}
}

/** The HTTP status for an error: its type's status, else a 4xx/5xx code it carries, else 500. */
export function httpStatusOf(err: unknown): number {
	const { type, code } = (err ?? {}) as { type?: unknown; code?: unknown };
	if (typeof type === "string" && HTTP_STATUS_BY_TYPE[type] !== undefined) return HTTP_STATUS_BY_TYPE[type];
	if (typeof code === "number" && code >= 400 && code <= 599) return code;
	return 500;
}

/** Seconds a client is told to wait (`Retry-After`) when a dependency is down. */
export const OUTAGE_RETRY_AFTER_S = 5;

// Moleculer's and moleculer-web's ways of saying the callee is unreachable or did not answer in time.
const OUTAGE_TYPES = new Set(["SERVICE_NOT_AVAILABLE", "SERVICE_NOT_FOUND", "REQUEST_TIMEOUT"]);
const OUTAGE_NAMES = new Set([
	"ServiceNotAvailableError",
	"ServiceNotFoundError",
	"ServiceUnavailableError",
	"RequestTimeoutError",
	"MaxRetriesPerRequestError"
]);
// Socket errors, PostgreSQL's shutdown/connection/too-many-connections SQLSTATEs.
const OUTAGE_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENOTFOUND", "57P01", "57P02", "57P03", "53300"]);
// What pg and ioredis say once their connection is gone; these survive a hop over NATS, where only
// name, message, code and type do.
const OUTAGE_MESSAGES =
	/Connection terminated|Connection is closed|Client has encountered a connection error|Stream isn't writeable|Reached the max retries per request|connect ECONNREFUSED|read ECONNRESET|timeout exceeded when trying to connect/i;

/**
 * Whether an error says that a dependency (database, Redis, another node) is down rather than
 * that the request is wrong: such errors answer 503 with `Retry-After` instead of a 500.
 */
export function isDependencyOutage(err: unknown, depth = 0): boolean {
	if (!err || typeof err !== "object" || depth > 3) return false;
	const { name, type, code, message, parent, original, cause } = err as Record<string, unknown>;
	if (typeof type === "string" && OUTAGE_TYPES.has(type)) return true;
	// An error that already says what it is (an upstream model failure, a bad request) keeps its type.
	if (typeof type === "string" && HTTP_STATUS_BY_TYPE[type] !== undefined) return false;
	if (typeof name === "string" && OUTAGE_NAMES.has(name)) return true;
	if (typeof code === "string" && (OUTAGE_CODES.has(code) || code.startsWith("08"))) return true;
	if (typeof message === "string" && OUTAGE_MESSAGES.test(message)) return true;
	return [parent, original, cause].some(inner => inner !== err && isDependencyOutage(inner, depth + 1));
}

/** The error a client sees for a dependency outage: 503 SERVICE_UNAVAILABLE; other errors unchanged. */
export function withOutageMapped(err: unknown): unknown {
	if (err instanceof UnavailableError || !isDependencyOutage(err)) return err;
	return new UnavailableError("A service chatmesh depends on is unavailable; retry shortly", { retryAfter: OUTAGE_RETRY_AFTER_S });
}
