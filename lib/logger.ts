/**
 * chatmesh's log lines, on Moleculer's console logger. With LOG_FORMAT=json each line is one JSON
 * object: `ts`, `level`, `msg`, the logger's bindings (`nodeID`, `ns`, `mod`, `svc`), the fields of
 * an object argument, and — inside a request (lib/request-context.ts) — `requestId`, plus
 * `traceId` when the request is traced, so one turn can be followed across gateway, conversation
 * and llm nodes. Errors become `{name, message, type, code, data}`; only unexpected ones (a 500
 * by the error table) keep their stack. Secrets never leave: fields named like credentials are replaced,
 * and the configured secret values are cut out of every JSON line wherever they appear.
 */
import { inspect } from "node:util";
import type { LoggerConfig } from "moleculer";
import type { ChatmeshConfig } from "./config";
import { httpStatusOf } from "./errors";
import { currentRequest, traceIdOf } from "./request-context";

const REDACTED = "[redacted]";

/** Field names (lower-case, without `_` and `-`) whose values are credentials. */
const SECRET_KEYS: ReadonlySet<string> = new Set([
	"password",
	"newpassword",
	"currentpassword",
	"authorization",
	"cookie",
	"apikey",
	"secret",
	"jwtsecret",
	"token",
	"accesstoken",
	"refreshtoken"
]);

function isSecretKey(key: string): boolean {
	return SECRET_KEYS.has(key.toLowerCase().replace(/[-_]/g, ""));
}

interface ErrorFields {
	name: string;
	message: string;
	type?: string;
	code?: unknown;
	data?: unknown;
	nodeID?: unknown;
	stack?: string;
}

/** `scheme://user:password@` in a message: a driver's error may quote the URL it was given. */
const URL_CREDENTIALS = /([a-z][a-z0-9+.-]*:\/\/[^\s:/@]*:)[^\s@/]+@/gi;

function withoutUrlCredentials(text: string): string {
	return text.includes("://") ? text.replace(URL_CREDENTIALS, `$1${REDACTED}@`) : text;
}

/**
 * Errors of a kind the error table knows (chatmesh's and Moleculer's types, a 4xx or 5xx code) are
 * expected: their type and message say what happened, and a stack would only repeat the same frames
 * on every occurrence. Only what would be a 500 INTERNAL_ERROR keeps its stack.
 */
export function errorFields(err: Error): ErrorFields {
	const e = err as Error & { type?: unknown; code?: unknown; data?: unknown; nodeID?: unknown };
	const fields: ErrorFields = { name: err.name, message: withoutUrlCredentials(err.message) };
	if (typeof e.type === "string" && e.type) fields.type = e.type;
	if (e.code !== undefined) fields.code = e.code;
	if (e.data !== undefined) fields.data = e.data;
	if (e.nodeID !== undefined) fields.nodeID = e.nodeID;
	if (httpStatusOf(err) === 500 && err.stack) fields.stack = withoutUrlCredentials(err.stack);
	return fields;
}

/** A JSON.stringify replacer: credentials by field name, errors as their fields, cycles cut. */
function replacer(): (key: string, value: unknown) => unknown {
	const seen = new WeakSet<object>();
	return (key, value) => {
		if (key && isSecretKey(key) && value !== undefined && value !== null && value !== "") return REDACTED;
		if (typeof value === "bigint") return value.toString();
		if (value !== null && typeof value === "object") {
			if (seen.has(value)) return "[circular]";
			seen.add(value);
			if (value instanceof Error) return errorFields(value);
		}
		return value;
	};
}

/** Fields a log call's object argument may not overwrite. */
const RESERVED = new Set(["ts", "level", "msg", "nodeID", "ns", "mod", "svc", "ver"]);

function isPlainObject(value: unknown): value is Record<string, unknown> {
	if (value === null || typeof value !== "object") return false;
	const proto = Object.getPrototypeOf(value);
	return proto === Object.prototype || proto === null;
}

interface Bindings {
	nodeID: string;
	ns: string;
	mod: string;
	svc?: string;
	ver?: string;
}

/** Cuts every configured secret value out of a finished line (the last line of defence). */
function scrubber(secrets: readonly string[]): (line: string) => string {
	// Short values would cut ordinary words out of every line; real keys and passwords are longer.
	const values = [...new Set(secrets.filter(s => s.length >= 8))];
	if (values.length === 0) return line => line;
	return line => {
		let out = line;
		for (const value of values) if (out.includes(value)) out = out.replaceAll(value, REDACTED);
		return out;
	};
}

/**
 * The JSON line of one log call. `traced`: this node runs the tracer; a request then has a trace
 * unless it was not sampled (its root span's own start is logged before the decision is made).
 */
export function jsonLine(level: string, args: readonly unknown[], bindings: Bindings | undefined, traced = false): string {
	const line: Record<string, unknown> = { ts: Date.now(), level, msg: "", ...bindings };
	const scope = currentRequest();
	const inTrace = traced && scope?.tracing !== false;
	if (scope?.requestID) {
		line.requestId = scope.requestID;
		if (inTrace) line.traceId = traceIdOf(scope.requestID);
	}
	const words: string[] = [];
	for (const arg of args) {
		if (typeof arg === "string") words.push(arg);
		else if (arg instanceof Error) line.err = arg;
		else if (isPlainObject(arg)) {
			for (const [key, value] of Object.entries(arg)) if (!RESERVED.has(key)) line[key] = value;
		} else if (arg !== undefined) words.push(typeof arg === "object" ? inspect(arg, { depth: 2, breakLength: Number.POSITIVE_INFINITY }) : String(arg));
	}
	line.msg = words.join(" ");
	// A field given explicitly (a request id logged after its scope ended) names the same request.
	if (typeof line.requestId === "string" && scope?.requestID !== line.requestId) {
		if (inTrace) line.traceId = traceIdOf(line.requestId);
		else delete line.traceId;
	}
	return JSON.stringify(line, replacer());
}

/** Text lines (LOG_FORMAT=text) keep Moleculer's short format; objects are printed with credentials replaced. */
function redactedInspect(value: unknown): string {
	const copy = JSON.parse(JSON.stringify(value, replacer()) ?? "null") as unknown;
	return inspect(copy, { depth: 2, breakLength: Number.POSITIVE_INFINITY });
}

/** Secret values from the configuration that no log line may carry. */
export function configuredSecrets(config: ChatmeshConfig): string[] {
	const secrets: string[] = [];
	for (const provider of config.providers ?? []) if (provider.apiKey) secrets.push(provider.apiKey);
	if (config.jwtSecret) secrets.push(config.jwtSecret);
	if (config.moderationProviderApiKey) secrets.push(config.moderationProviderApiKey);
	for (const url of [config.databaseUrl, config.redisUrl]) {
		if (!url) continue;
		try {
			const password = decodeURIComponent(new URL(url).password);
			if (password) secrets.push(password);
		} catch {
			// validated by the config already
		}
	}
	return secrets;
}

export function loggerOptions(config: ChatmeshConfig): LoggerConfig {
	const json = config.logFormat === "json";
	const scrub = scrubber(configuredSecrets(config));
	const traced = config.tracing !== undefined;
	return {
		type: "Console",
		options: {
			level: config.logLevel,
			formatter: json ? (level: string, args: unknown[], bindings?: Bindings) => [scrub(jsonLine(level, args, bindings, traced))] : "short",
			objectPrinter: json ? undefined : redactedInspect,
			colors: !json,
			moduleColors: false,
			autoPadding: false
		}
	};
}
