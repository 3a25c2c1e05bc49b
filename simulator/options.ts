/**
 * The simulator's knobs: their types and defaults, the validation shared by `configure()`,
 * `POST /_simulator/config` and the command line, and the per-request header overrides.
 */
import type { IncomingHttpHeaders } from "node:http";

/** Knobs that can be changed while the simulator runs (`configure()`, `POST /_simulator/config`). */
export interface SimulatorKnobs {
	/** Model ids served; chat requests for any other model get a 404 `model_not_found`. */
	models: string[];
	/** Natural answer length in tokens when the request sets no `x-simulator-output-tokens`. */
	outputTokens: number;
	/** Delay before the first content token (streamed) or before the whole answer (non-stream). */
	ttftMs: number;
	/** Gap between two tokens; 0 writes tokens in a tight loop that yields every 64 tokens. */
	tokenIntervalMs: number;
	/** Status of injected errors; null means 500 when `errorRate` asks for errors. */
	errorStatus: number | null;
	/** Fraction (0..1) of chat requests answered with an injected error. null means 1 when `errorStatus` is set, else 0. */
	errorRate: number | null;
	/** Never finish chat answers (stream: headers and role chunk only) until the client goes away. */
	hang: boolean;
	/** Produce this many content tokens, then hang. null disables. */
	hangAfterTokens: number | null;
	/** Moderation flags inputs containing any of these words (case-insensitive). */
	flaggedWords: string[];
	/** When set, /v1/* requests must carry `Authorization: Bearer <apiKey>`. */
	apiKey: string | null;
	/** Embedding length when the request has no `dimensions`. */
	embeddingDimensions: number;
}

/** Start options: the knobs plus where to listen (host and port are fixed once started). */
export interface SimulatorOptions extends SimulatorKnobs {
	host: string;
	/** 0 picks a free port. */
	port: number;
}

export const DEFAULT_KNOBS: Readonly<SimulatorKnobs> = Object.freeze({
	models: ["sim-small", "sim-medium", "sim-large"],
	outputTokens: 24,
	ttftMs: 0,
	tokenIntervalMs: 0,
	errorStatus: null,
	errorRate: null,
	hang: false,
	hangAfterTokens: null,
	flaggedWords: ["simflagged"],
	apiKey: null,
	embeddingDimensions: 64
});

export const DEFAULT_HOST = "127.0.0.1";

/** Upper bounds that keep a typo from asking for something absurd. */
const MAX_OUTPUT_TOKENS = 1_000_000;
const MAX_DELAY_MS = 3_600_000;
export const MAX_EMBEDDING_DIMENSIONS = 8192;

const KNOB_KEYS: readonly (keyof SimulatorKnobs)[] = Object.keys(DEFAULT_KNOBS) as (keyof SimulatorKnobs)[];

/** Read-only keys `GET /_simulator/config` returns; a POST may send them back and they are ignored. */
const READ_ONLY_CONFIG_KEYS = new Set(["host", "port", "apiKeyRequired"]);

/** A knob value that fails validation; `key` is the knob (or header) at fault. */
export class SimulatorConfigError extends Error {
	constructor(
		readonly key: string,
		message: string
	) {
		super(message);
		this.name = "SimulatorConfigError";
	}
}

function fail(key: string, expected: string, value: unknown): never {
	let shown: string;
	try {
		shown = JSON.stringify(value) ?? String(value);
	} catch {
		shown = String(value);
	}
	if (shown.length > 80) shown = `${shown.slice(0, 77)}...`;
	throw new SimulatorConfigError(key, `Invalid value for ${key}: expected ${expected}, got ${shown}`);
}

function integerIn(key: string, value: unknown, min: number, max: number): number {
	if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max) {
		fail(key, `an integer between ${min} and ${max}`, value);
	}
	return value;
}

function numberIn(key: string, value: unknown, min: number, max: number): number {
	if (typeof value !== "number" || !Number.isFinite(value) || value < min || value > max) {
		fail(key, `a number between ${min} and ${max}`, value);
	}
	return value;
}

function stringList(key: string, value: unknown, allowEmpty: boolean): string[] {
	if (!Array.isArray(value) || value.some(v => typeof v !== "string" || v.length === 0) || (!allowEmpty && value.length === 0)) {
		fail(key, allowEmpty ? "an array of non-empty strings" : "a non-empty array of non-empty strings", value);
	}
	return [...(value as string[])];
}

/**
 * Validates a partial knob object (from TypeScript, JSON or the command line) and returns a
 * clean copy. Unknown keys are rejected, except the read-only ones when `allowReadOnly` is set.
 */
export function validateKnobs(input: unknown, allowReadOnly = false): Partial<SimulatorKnobs> {
	if (typeof input !== "object" || input === null || Array.isArray(input)) {
		throw new SimulatorConfigError("config", "Simulator config must be a JSON object");
	}
	const out: Partial<SimulatorKnobs> = {};
	for (const [key, value] of Object.entries(input)) {
		if (value === undefined) continue;
		switch (key) {
			case "models":
				out.models = stringList(key, value, false);
				break;
			case "outputTokens":
				out.outputTokens = integerIn(key, value, 0, MAX_OUTPUT_TOKENS);
				break;
			case "ttftMs":
				out.ttftMs = numberIn(key, value, 0, MAX_DELAY_MS);
				break;
			case "tokenIntervalMs":
				out.tokenIntervalMs = numberIn(key, value, 0, MAX_DELAY_MS);
				break;
			case "errorStatus":
				out.errorStatus = value === null ? null : integerIn(key, value, 400, 599);
				break;
			case "errorRate":
				out.errorRate = value === null ? null : numberIn(key, value, 0, 1);
				break;
			case "hang":
				if (typeof value !== "boolean") fail(key, "a boolean", value);
				out.hang = value;
				break;
			case "hangAfterTokens":
				out.hangAfterTokens = value === null ? null : integerIn(key, value, 0, MAX_OUTPUT_TOKENS);
				break;
			case "flaggedWords":
				out.flaggedWords = stringList(key, value, true);
				break;
			case "apiKey":
				if (value !== null && (typeof value !== "string" || value.length === 0)) fail(key, "a non-empty string or null", value);
				out.apiKey = value;
				break;
			case "embeddingDimensions":
				out.embeddingDimensions = integerIn(key, value, 1, MAX_EMBEDDING_DIMENSIONS);
				break;
			default:
				if (allowReadOnly && READ_ONLY_CONFIG_KEYS.has(key)) break;
				throw new SimulatorConfigError(key, `Unknown simulator option: ${key} (known: ${KNOB_KEYS.join(", ")})`);
		}
	}
	return out;
}

/** A copy of the knobs only (no host/port), e.g. for resetting. */
export function pickKnobs(options: SimulatorKnobs): SimulatorKnobs {
	return {
		models: [...options.models],
		outputTokens: options.outputTokens,
		ttftMs: options.ttftMs,
		tokenIntervalMs: options.tokenIntervalMs,
		errorStatus: options.errorStatus,
		errorRate: options.errorRate,
		hang: options.hang,
		hangAfterTokens: options.hangAfterTokens,
		flaggedWords: [...options.flaggedWords],
		apiKey: options.apiKey,
		embeddingDimensions: options.embeddingDimensions
	};
}

// ---------------------------------------------------------------------------------------------
// Per-request overrides (headers). They win over the process-level knobs for that request only.
// ---------------------------------------------------------------------------------------------

const HEADER_TTFT_MS = "x-simulator-ttft-ms";
const HEADER_TOKEN_INTERVAL_MS = "x-simulator-token-interval-ms";
const HEADER_OUTPUT_TOKENS = "x-simulator-output-tokens";
const HEADER_ERROR_STATUS = "x-simulator-error-status";
const HEADER_ERROR_RATE = "x-simulator-error-rate";
const HEADER_HANG = "x-simulator-hang";
const HEADER_HANG_AFTER_TOKENS = "x-simulator-hang-after-tokens";
const HEADER_ECHO = "x-simulator-echo";

const SIMULATOR_HEADERS = [
	HEADER_TTFT_MS,
	HEADER_TOKEN_INTERVAL_MS,
	HEADER_OUTPUT_TOKENS,
	HEADER_ERROR_STATUS,
	HEADER_ERROR_RATE,
	HEADER_HANG,
	HEADER_HANG_AFTER_TOKENS,
	HEADER_ECHO
] as const;

export interface RequestOverrides {
	ttftMs?: number;
	tokenIntervalMs?: number;
	outputTokens?: number;
	errorStatus?: number;
	errorRate?: number;
	hang?: boolean;
	hangAfterTokens?: number;
	echo?: boolean;
}

/** The knobs in force for one chat request. */
export interface EffectiveKnobs {
	ttftMs: number;
	tokenIntervalMs: number;
	outputTokens: number;
	/** Resolved status and rate of error injection (rate 0 = never). */
	errorStatus: number;
	errorRate: number;
	hang: boolean;
	hangAfterTokens: number | null;
	echo: boolean;
}

const INTEGER_RE = /^\d{1,10}$/;
const DECIMAL_RE = /^\d{1,10}(\.\d{1,10})?$|^\.\d{1,10}$/;

function headerInteger(name: string, raw: string, min: number, max: number): number {
	const value = INTEGER_RE.test(raw) ? Number(raw) : Number.NaN;
	if (!(value >= min && value <= max)) fail(name, `an integer between ${min} and ${max}`, raw);
	return value;
}

function headerNumber(name: string, raw: string, min: number, max: number): number {
	const value = DECIMAL_RE.test(raw) ? Number(raw) : Number.NaN;
	if (!(value >= min && value <= max)) fail(name, `a number between ${min} and ${max}`, raw);
	return value;
}

function headerBoolean(name: string, raw: string): boolean {
	switch (raw.toLowerCase()) {
		case "1":
		case "true":
		case "yes":
			return true;
		case "0":
		case "false":
		case "no":
			return false;
		default:
			return fail(name, "1/true/yes or 0/false/no", raw);
	}
}

/**
 * Reads the `x-simulator-*` headers. Throws SimulatorConfigError (key = header name) for an
 * invalid value or an unknown `x-simulator-*` header, so a typo never passes silently.
 */
export function parseOverrideHeaders(headers: IncomingHttpHeaders): RequestOverrides {
	const out: RequestOverrides = {};
	for (const [name, rawValue] of Object.entries(headers)) {
		if (!name.startsWith("x-simulator-")) continue;
		const raw = (Array.isArray(rawValue) ? rawValue.join(", ") : (rawValue ?? "")).trim();
		switch (name) {
			case HEADER_TTFT_MS:
				out.ttftMs = headerNumber(name, raw, 0, MAX_DELAY_MS);
				break;
			case HEADER_TOKEN_INTERVAL_MS:
				out.tokenIntervalMs = headerNumber(name, raw, 0, MAX_DELAY_MS);
				break;
			case HEADER_OUTPUT_TOKENS:
				out.outputTokens = headerInteger(name, raw, 0, MAX_OUTPUT_TOKENS);
				break;
			case HEADER_ERROR_STATUS:
				out.errorStatus = headerInteger(name, raw, 400, 599);
				break;
			case HEADER_ERROR_RATE:
				out.errorRate = headerNumber(name, raw, 0, 1);
				break;
			case HEADER_HANG:
				out.hang = headerBoolean(name, raw);
				break;
			case HEADER_HANG_AFTER_TOKENS:
				out.hangAfterTokens = headerInteger(name, raw, 0, MAX_OUTPUT_TOKENS);
				break;
			case HEADER_ECHO:
				out.echo = headerBoolean(name, raw);
				break;
			default:
				throw new SimulatorConfigError(name, `Unknown simulator header ${name} (known: ${SIMULATOR_HEADERS.join(", ")})`);
		}
	}
	return out;
}

/**
 * Headers win over process knobs. Error injection: a status with no rate means "always"; a rate
 * with no status means 500; neither means never.
 */
export function effectiveKnobs(knobs: SimulatorKnobs, overrides: RequestOverrides): EffectiveKnobs {
	const status = overrides.errorStatus ?? knobs.errorStatus;
	const rate = overrides.errorRate ?? knobs.errorRate ?? (status !== null ? 1 : 0);
	return {
		ttftMs: overrides.ttftMs ?? knobs.ttftMs,
		tokenIntervalMs: overrides.tokenIntervalMs ?? knobs.tokenIntervalMs,
		outputTokens: overrides.outputTokens ?? knobs.outputTokens,
		errorStatus: status ?? 500,
		errorRate: rate,
		hang: overrides.hang ?? knobs.hang,
		hangAfterTokens: overrides.hangAfterTokens ?? knobs.hangAfterTokens,
		echo: overrides.echo ?? false
	};
}

/**
 * Counter-based error decision: a running sum of the rate fires once every time it crosses an
 * integer, so rate 0.25 fails exactly every 4th request, 1 always and 0 never: reproducible.
 */
export class ErrorGate {
	private accumulator = 0;

	shouldFail(rate: number): boolean {
		if (rate >= 1) return true;
		if (rate <= 0) return false;
		this.accumulator += rate;
		if (this.accumulator >= 1 - 1e-9) {
			this.accumulator -= 1;
			if (this.accumulator < 0) this.accumulator = 0;
			return true;
		}
		return false;
	}

	reset(): void {
		this.accumulator = 0;
	}
}
