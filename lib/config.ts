/**
 * The one place chatmesh reads its environment. Every value is validated here and handed out
 * typed; nothing else reads `process.env`. With nothing set, every component falls back to its
 * embedded default: no transporter, memory cacher, PGlite under ./data, the built-in simulator.
 */
import path from "node:path";
import { Cron } from "croner";
import { z } from "zod";

export const SERVICE_NAMES = ["gateway", "user", "conversation", "llm", "quota", "moderation", "tool", "jobs"] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export interface ProviderConfig {
	/** A short name used in logs, metrics and error data. */
	name: string;
	/** OpenAI-compatible base URL, ending in /v1 for most servers. */
	baseURL: string;
	apiKey?: string;
	/** Model ids this provider serves. */
	models: string[];
}

/** The model router's tiers: a model id for cheap, medium and strong requests. */
export interface ModelTiers {
	cheap: string;
	medium: string;
	strong: string;
}

export interface ChatmeshConfig {
	nodeEnv: "development" | "production" | "test";
	nodeID?: string;
	namespace: string;
	/** Services this node runs. */
	services: ServiceName[];
	/** NATS server URLs; empty means no transporter (every service in one process). */
	transporter: string[];
	/** PostgreSQL URL; undefined means the embedded PGlite database under dataDir. */
	databaseUrl?: string;
	/** Redis URL; undefined means in-memory cacher, rate limits and replay log. */
	redisUrl?: string;
	/** Ordered provider list; undefined means the built-in inference simulator. */
	providers?: ProviderConfig[];
	/** The router's tiers; undefined means the first, middle and last model the providers serve. */
	modelTiers?: ModelTiers;
	/** How long a provider may take to send its first token before it counts as timed out. */
	llmFirstTokenTimeoutMs: number;
	/** How long a streaming provider may stay silent between two chunks. */
	llmIdleTimeoutMs: number;
	host: string;
	port: number;
	dataDir: string;
	/** Signs access tokens. Unset outside production on one process: a random one kept in dataDir. */
	jwtSecret?: string;
	accessTokenTtlS: number;
	refreshTokenTtlS: number;
	/** Largest accepted request body. */
	bodyLimitBytes: number;
	/** Take the client address from X-Forwarded-For (only behind a proxy you control). */
	trustProxy: boolean;
	/** Prometheus metrics endpoint port (Moleculer's reporter); undefined: metrics off. */
	metricsPort?: number;
	/** Address the metrics endpoint listens on (METRICS_HOST); loopback unless a scraper elsewhere needs it. */
	metricsHost: string;
	/** Generations one llm node runs at once (its GPU pool's width); more wait in its queue. */
	llmConcurrency: number;
	/** Every user's token budget per period until an admin sets another. */
	quotaDefaultTokens: number;
	quotaPeriod: "day" | "week" | "month";
	/** The most tokens one model call may write; reserved before it and enforced on it. */
	quotaMaxOutputTokens: number;
	quotaResetCheckS: number;
	/** Model → tools → model rounds in one chat turn before the model must answer. */
	maxToolSteps: number;
	/** Overrides of the default rate limits (see services/gateway/rate-limit.ts). */
	rateLimits?: RateLimitOverrides;
	logLevel: LogLevel;
	logFormat: "json" | "text";
	/** How long SIGTERM waits for in-flight work before closing connections. */
	shutdownGraceMs: number;
	requestTimeoutMs: number;
	heartbeatIntervalS: number;
	heartbeatTimeoutS: number;
	/** How long a conversation node's claim on its running answers holds without renewal (TURN_LEASE_TTL_MS). */
	turnLeaseTtlMs: number;
	/** Words and phrases the moderation service blocks, lower-cased (MODERATION_DENY_LIST); empty by default. */
	moderationDenyList: string[];
	/** OpenAI-compatible base URL whose /moderations the moderation service consults; unset means no provider check. */
	moderationProviderUrl?: string;
	moderationProviderApiKey?: string;
	/** Origins allowed to call the API from a browser on another origin (`*`: any); empty: same-origin only. */
	corsOrigins: string[];
	/** Port of the health listener (/health, /ready) for probes of nodes without the gateway; undefined: none. */
	healthPort?: number;
	/** After SIGTERM, how long the node answers not ready before it drains, so balancers stop sending it work first. */
	shutdownUnreadyDelayMs: number;
	/** Where action spans go; undefined: tracing off (the embedded default). */
	tracing?: TracingConfig;
	/** Durable jobs (JOBS_*, RETENTION_DAYS): see services/jobs/. */
	jobs: JobsConfig;
}

export const TRACING_EXPORTERS = ["none", "console", "zipkin"] as const;

export interface TracingConfig {
	/** `zipkin`: Zipkin v2 JSON over HTTP (Zipkin, Jaeger's Zipkin collector, Tempo); `console`: printed by each node. */
	exporter: Exclude<(typeof TRACING_EXPORTERS)[number], "none">;
	/** Base URL of the Zipkin-compatible collector; spans are posted to `<endpoint>/api/v2/spans`. */
	endpoint: string;
	/** Fraction of requests traced, 0 to 1; the decision is made once per request, at its first action. */
	sampleRate: number;
}

export interface JobsConfig {
	/** Jobs one jobs node runs at once (JOBS_CONCURRENCY). */
	concurrency: number;
	/** Queued plus running jobs one user may have; more is 429 TOO_MANY_JOBS (JOBS_MAX_ACTIVE_PER_USER). */
	maxActivePerUser: number;
	/** How long a worker's claim on a running job holds without renewal (JOBS_LEASE_MS). */
	leaseMs: number;
	/** How often an idle worker looks for runnable jobs besides the channel's wake-ups (JOBS_POLL_MS). */
	pollMs: number;
	/** Days a soft-deleted conversation or a finished job is kept (RETENTION_DAYS). */
	retentionDays: number;
	/** Cron expressions replacing the maintenance schedules' defaults, by name; "off" turns one off (JOBS_SCHEDULES). */
	schedules: Record<string, string>;
}

const rateRuleSchema = z.object({ points: z.number().int().min(1), durationS: z.number().int().min(1) }).strict();
const rateClassesSchema = z.object({ chat: rateRuleSchema, auth: rateRuleSchema, default: rateRuleSchema }).partial().strict();
const rateLimitsSchema = z
	.object({
		perUser: rateClassesSchema,
		perIp: rateClassesSchema,
		loginFailures: z
			.object({
				points: z.number().int().min(1),
				durationS: z.number().int().min(1),
				blockDurationS: z.number().int().min(1),
				maxBlockDurationS: z.number().int().min(1)
			})
			.partial()
			.strict()
	})
	.partial()
	.strict();
export type RateLimitOverrides = z.infer<typeof rateLimitsSchema>;

/** Secrets that appear in examples and tutorials; never acceptable. */
const KNOWN_DEFAULT_SECRETS = new Set(
	["secret", "changeme", "change-me", "chatmesh", "jwt_secret", "jwt-secret", "your-secret", "your_jwt_secret", "supersecret", "password", "development"].map(
		s => s.toLowerCase()
	)
);
const MIN_SECRET_LENGTH = 32;

/** A configuration value that is not of the expected form. Its message is one line. */
export class ConfigError extends Error {
	constructor(
		readonly variable: string,
		readonly expected: string
	) {
		super(`${variable} must be ${expected}`);
		this.name = "ConfigError";
	}
}

type Env = Record<string, string | undefined>;

/** Values that are unset or blank count as unset, so `FOO=` in a .env file means "default". */
function read(env: Env, name: string): string | undefined {
	const value = env[name]?.trim();
	return value ? value : undefined;
}

function parseWith<T>(env: Env, name: string, schema: z.ZodType<T>, expected: string): T | undefined {
	const raw = read(env, name);
	if (raw === undefined) return undefined;
	const result = schema.safeParse(raw);
	if (!result.success) throw new ConfigError(name, expected);
	return result.data;
}

const integer = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

function urlWithProtocols(protocols: string[]) {
	return z.string().refine(value => {
		try {
			const url = new URL(value);
			return protocols.includes(url.protocol) && url.hostname.length > 0;
		} catch {
			return false;
		}
	});
}

const providerSchema = z
	.object({
		name: z.string().min(1).max(64),
		baseURL: urlWithProtocols(["http:", "https:"]),
		apiKey: z.string().min(1).optional(),
		models: z.array(z.string().min(1)).min(1)
	})
	.strict();

function parseProviders(env: Env): ProviderConfig[] | undefined {
	const raw = read(env, "LLM_PROVIDERS");
	if (raw === undefined) return undefined;
	const expected =
		'a JSON array of {"name","baseURL","apiKey"?,"models":[…]} objects with unique names, e.g. [{"name":"vllm","baseURL":"http://127.0.0.1:8000/v1","models":["llama-3-8b"]}]';
	let json: unknown;
	try {
		json = JSON.parse(raw);
	} catch {
		throw new ConfigError("LLM_PROVIDERS", expected);
	}
	const result = z.array(providerSchema).min(1).safeParse(json);
	if (!result.success) throw new ConfigError("LLM_PROVIDERS", expected);
	const names = new Set(result.data.map(p => p.name));
	if (names.size !== result.data.length) throw new ConfigError("LLM_PROVIDERS", expected);
	return result.data;
}

const modelTiersSchema = z.object({ cheap: z.string().min(1), medium: z.string().min(1), strong: z.string().min(1) }).strict();

function parseModelTiers(env: Env, providers: ProviderConfig[] | undefined): ModelTiers | undefined {
	const raw = read(env, "MODEL_TIERS");
	if (raw === undefined) return undefined;
	const expected = 'a JSON object naming a model for each tier, e.g. {"cheap":"llama-3-8b","medium":"qwen-2.5-32b","strong":"llama-3-70b"}';
	let json: unknown;
	try {
		json = JSON.parse(raw);
	} catch {
		throw new ConfigError("MODEL_TIERS", expected);
	}
	const result = modelTiersSchema.safeParse(json);
	if (!result.success) throw new ConfigError("MODEL_TIERS", expected);
	// With providers configured, a tier naming a model none of them serves is a typo caught now.
	const served = new Set(providers?.flatMap(p => p.models));
	if (providers && Object.values(result.data).some(model => !served.has(model)))
		throw new ConfigError("MODEL_TIERS", "a JSON object whose three models are all served by LLM_PROVIDERS");
	return result.data;
}

function parseJwtSecret(env: Env, nodeEnv: ChatmeshConfig["nodeEnv"]): string | undefined {
	const secret = read(env, "JWT_SECRET");
	const expected = `at least ${MIN_SECRET_LENGTH} random characters and not a well-known default`;
	if (secret === undefined) {
		if (nodeEnv === "production") throw new ConfigError("JWT_SECRET", `set in production (${expected})`);
		return undefined;
	}
	if (secret.length < MIN_SECRET_LENGTH || KNOWN_DEFAULT_SECRETS.has(secret.toLowerCase())) throw new ConfigError("JWT_SECRET", expected);
	return secret;
}

function parseRateLimits(env: Env): RateLimitOverrides | undefined {
	const raw = read(env, "RATE_LIMITS");
	if (raw === undefined) return undefined;
	const expected =
		'a JSON object overriding the defaults, e.g. {"perUser":{"chat":{"points":30,"durationS":60}},"perIp":{"auth":{"points":20,"durationS":60}}}';
	try {
		const result = rateLimitsSchema.safeParse(JSON.parse(raw));
		if (result.success) return result.data;
	} catch {
		// fall through to the one-line error
	}
	throw new ConfigError("RATE_LIMITS", expected);
}

function parseJobSchedules(env: Env): Record<string, string> {
	const raw = read(env, "JOBS_SCHEDULES");
	if (raw === undefined) return {};
	const expected = 'a JSON object of schedule name to cron expression or "off", e.g. {"quota-reset":"*/5 * * * *","conversation-purge":"off"}';
	try {
		const result = z.record(z.string().regex(/^[a-z][a-z-]{0,63}$/), z.string().min(1).max(200)).safeParse(JSON.parse(raw));
		// Croner throws on an expression it cannot parse: caught here, not at the first tick.
		if (result.success && Object.values(result.data).every(cron => cron === "off" || new Cron(cron, { paused: true, timezone: "UTC" }))) return result.data;
	} catch {
		// fall through to the one-line error
	}
	throw new ConfigError("JOBS_SCHEDULES", expected);
}

function parseServices(env: Env): ServiceName[] {
	const raw = read(env, "SERVICES");
	if (raw === undefined || raw === "*" || raw === "all") return [...SERVICE_NAMES];
	const names = raw
		.split(",")
		.map(s => s.trim())
		.filter(Boolean);
	const known = new Set<string>(SERVICE_NAMES);
	if (names.length === 0 || names.some(n => !known.has(n))) throw new ConfigError("SERVICES", `"*" or a comma-separated list of ${SERVICE_NAMES.join(", ")}`);
	return [...new Set(names)] as ServiceName[];
}

function parseTransporter(env: Env): string[] {
	const raw = read(env, "TRANSPORTER");
	if (raw === undefined) return [];
	const urls = raw.split(",").map(s => s.trim());
	const valid = urlWithProtocols(["nats:"]);
	if (urls.some(u => !valid.safeParse(u).success)) throw new ConfigError("TRANSPORTER", "a NATS URL such as nats://127.0.0.1:4222 (or a comma-separated list)");
	return urls;
}

const MAX_DENY_TERM_CHARS = 200;

/** MODERATION_DENY_LIST: comma-separated words or phrases, kept lower-cased with whitespace collapsed. */
function parseDenyList(env: Env): string[] {
	const raw = read(env, "MODERATION_DENY_LIST");
	if (raw === undefined) return [];
	const terms = raw.split(",").map(term => term.normalize("NFKC").trim().replace(/\s+/g, " ").toLowerCase());
	// A stray comma is a typo worth a line, not a silent empty term.
	if (terms.some(term => term.length === 0 || term.length > MAX_DENY_TERM_CHARS))
		throw new ConfigError("MODERATION_DENY_LIST", `a comma-separated list of words or phrases, each 1-${MAX_DENY_TERM_CHARS} characters`);
	return [...new Set(terms)];
}

/** CORS_ORIGINS: `*`, or a comma-separated list of origins such as https://chat.example.com. */
function parseCorsOrigins(env: Env): string[] {
	const raw = read(env, "CORS_ORIGINS");
	if (raw === undefined) return [];
	if (raw === "*") return ["*"];
	const origins = raw.split(",").map(s => s.trim());
	const isOrigin = (value: string) => {
		try {
			const url = new URL(value);
			return (url.protocol === "http:" || url.protocol === "https:") && url.origin === value;
		} catch {
			return false;
		}
	};
	if (origins.some(o => !isOrigin(o)))
		throw new ConfigError("CORS_ORIGINS", '"*" or a comma-separated list of origins such as https://chat.example.com (scheme, host and port only)');
	return [...new Set(origins)];
}

/** TRACING_EXPORTER, TRACING_ENDPOINT, TRACING_SAMPLE_RATE: off unless an exporter is named. */
function parseTracing(env: Env): TracingConfig | undefined {
	const exporter = parseWith(env, "TRACING_EXPORTER", z.enum(TRACING_EXPORTERS), `one of ${TRACING_EXPORTERS.join(", ")}`) ?? "none";
	const endpoint =
		parseWith(
			env,
			"TRACING_ENDPOINT",
			urlWithProtocols(["http:", "https:"]),
			"an http(s) base URL of a Zipkin-compatible collector such as http://127.0.0.1:9411"
		) ?? "http://127.0.0.1:9411";
	const sampleRate = parseWith(env, "TRACING_SAMPLE_RATE", z.coerce.number().min(0).max(1), "a number from 0 to 1") ?? 1;
	if (exporter === "none") return undefined;
	return { exporter, endpoint: endpoint.replace(/\/+$/, ""), sampleRate };
}

/** Reads and validates the environment. Throws ConfigError for the first bad value. */
export function loadConfig(env: Env = process.env): ChatmeshConfig {
	const nodeEnv = parseWith(env, "NODE_ENV", z.enum(["development", "production", "test"]), "one of development, production, test") ?? "development";
	const transporter = parseTransporter(env);
	const services = parseServices(env);
	if (transporter.length === 0 && read(env, "SERVICES") !== undefined && services.length !== SERVICE_NAMES.length)
		throw new ConfigError("SERVICES", "unset when TRANSPORTER is unset (a subset of services needs a NATS transporter)");

	const providers = parseProviders(env);

	const config: ChatmeshConfig = {
		nodeEnv,
		nodeID: parseWith(env, "NODE_ID", z.string().regex(/^[\w.-]{1,64}$/), "1-64 letters, digits, '.', '-' or '_'"),
		namespace: parseWith(env, "NAMESPACE", z.string().regex(/^[\w-]{1,64}$/), "1-64 letters, digits, '-' or '_'") ?? "chatmesh",
		services,
		transporter,
		databaseUrl: parseWith(
			env,
			"DATABASE_URL",
			urlWithProtocols(["postgres:", "postgresql:"]),
			"a PostgreSQL URL such as postgres://user:password@127.0.0.1:5432/chatmesh"
		),
		redisUrl: parseWith(env, "REDIS_URL", urlWithProtocols(["redis:", "rediss:"]), "a Redis URL such as redis://127.0.0.1:6379/0"),
		providers,
		modelTiers: parseModelTiers(env, providers),
		llmFirstTokenTimeoutMs: parseWith(env, "LLM_FIRST_TOKEN_TIMEOUT_MS", integer(100, 600_000), "a whole number of milliseconds (100-600000)") ?? 60_000,
		llmIdleTimeoutMs: parseWith(env, "LLM_IDLE_TIMEOUT_MS", integer(100, 600_000), "a whole number of milliseconds (100-600000)") ?? 30_000,
		host: parseWith(env, "HOST", z.string().regex(/^[\w.:-]+$/), "a host name or IP address to listen on") ?? "0.0.0.0",
		port: parseWith(env, "PORT", integer(0, 65535), "a port number from 0 to 65535") ?? 3000,
		dataDir: path.resolve(parseWith(env, "DATA_DIR", z.string().min(1), "a directory path") ?? path.join(process.cwd(), "data")),
		jwtSecret: parseJwtSecret(env, nodeEnv),
		accessTokenTtlS: parseWith(env, "ACCESS_TOKEN_TTL_S", integer(1, 86_400), "a whole number of seconds (1-86400)") ?? 900,
		refreshTokenTtlS: parseWith(env, "REFRESH_TOKEN_TTL_S", integer(60, 31_536_000), "a whole number of seconds (60-31536000)") ?? 30 * 86_400,
		bodyLimitBytes: parseWith(env, "BODY_LIMIT_BYTES", integer(1024, 104_857_600), "a whole number of bytes (1024-104857600)") ?? 1_048_576,
		trustProxy:
			parseWith(
				env,
				"TRUST_PROXY",
				z.enum(["true", "false", "1", "0"]).transform(v => v === "true" || v === "1"),
				"true or false"
			) ?? false,
		rateLimits: parseRateLimits(env),
		metricsPort: parseWith(env, "METRICS_PORT", integer(0, 65535), "a port number from 0 to 65535"),
		metricsHost: parseWith(env, "METRICS_HOST", z.string().regex(/^[\w.:-]+$/), "a host name or IP address to listen on") ?? "127.0.0.1",
		llmConcurrency: parseWith(env, "LLM_CONCURRENCY", integer(1, 100_000), "a whole number from 1 to 100000") ?? 64,
		quotaDefaultTokens: parseWith(env, "QUOTA_DEFAULT_TOKENS", integer(0, 1e12), "a whole number of tokens") ?? 1_000_000,
		quotaPeriod: parseWith(env, "QUOTA_PERIOD", z.enum(["day", "week", "month"]), "day, week or month") ?? "month",
		quotaMaxOutputTokens: parseWith(env, "QUOTA_MAX_OUTPUT_TOKENS", integer(1, 1_000_000), "a whole number of tokens (1-1000000)") ?? 2048,
		quotaResetCheckS: parseWith(env, "QUOTA_RESET_CHECK_S", integer(1, 86_400), "a whole number of seconds (1-86400)") ?? 60,
		maxToolSteps: parseWith(env, "MAX_TOOL_STEPS", integer(0, 20), "a whole number from 0 to 20") ?? 4,
		logLevel: parseWith(env, "LOG_LEVEL", z.enum(LOG_LEVELS), `one of ${LOG_LEVELS.join(", ")}`) ?? "info",
		logFormat: parseWith(env, "LOG_FORMAT", z.enum(["json", "text"]), "json or text") ?? (nodeEnv === "production" ? "json" : "text"),
		shutdownGraceMs: parseWith(env, "SHUTDOWN_GRACE_MS", integer(0, 600_000), "a whole number of milliseconds (0-600000)") ?? 10_000,
		requestTimeoutMs: parseWith(env, "REQUEST_TIMEOUT_MS", integer(100, 600_000), "a whole number of milliseconds (100-600000)") ?? 30_000,
		heartbeatIntervalS: parseWith(env, "HEARTBEAT_INTERVAL_S", integer(1, 60), "a whole number of seconds (1-60)") ?? 2,
		heartbeatTimeoutS: parseWith(env, "HEARTBEAT_TIMEOUT_S", integer(2, 300), "a whole number of seconds (2-300)") ?? 6,
		turnLeaseTtlMs: parseWith(env, "TURN_LEASE_TTL_MS", integer(1000, 600_000), "a whole number of milliseconds (1000-600000)") ?? 10_000,
		moderationDenyList: parseDenyList(env),
		moderationProviderUrl: parseWith(
			env,
			"MODERATION_PROVIDER_URL",
			urlWithProtocols(["http:", "https:"]),
			"an http(s) OpenAI-compatible base URL such as https://api.openai.com/v1"
		),
		moderationProviderApiKey: parseWith(env, "MODERATION_PROVIDER_API_KEY", z.string().regex(/^\S+$/), "an API key without spaces"),
		corsOrigins: parseCorsOrigins(env),
		healthPort: parseWith(env, "HEALTH_PORT", integer(0, 65535), "a port number from 0 to 65535"),
		shutdownUnreadyDelayMs: parseWith(env, "SHUTDOWN_UNREADY_DELAY_MS", integer(0, 300_000), "a whole number of milliseconds (0-300000)") ?? 0,
		tracing: parseTracing(env),
		jobs: {
			concurrency: parseWith(env, "JOBS_CONCURRENCY", integer(1, 1000), "a whole number from 1 to 1000") ?? 4,
			maxActivePerUser: parseWith(env, "JOBS_MAX_ACTIVE_PER_USER", integer(1, 100_000), "a whole number from 1 to 100000") ?? 10,
			leaseMs: parseWith(env, "JOBS_LEASE_MS", integer(1000, 3_600_000), "a whole number of milliseconds (1000-3600000)") ?? 30_000,
			pollMs: parseWith(env, "JOBS_POLL_MS", integer(100, 600_000), "a whole number of milliseconds (100-600000)") ?? 2000,
			retentionDays: parseWith(env, "RETENTION_DAYS", integer(1, 36_500), "a whole number of days (1-36500)") ?? 30,
			schedules: parseJobSchedules(env)
		}
	};
	if (config.moderationProviderApiKey !== undefined && config.moderationProviderUrl === undefined)
		throw new ConfigError("MODERATION_PROVIDER_API_KEY", "unset unless MODERATION_PROVIDER_URL is set");
	if (config.heartbeatTimeoutS <= config.heartbeatIntervalS) throw new ConfigError("HEARTBEAT_TIMEOUT_S", "greater than HEARTBEAT_INTERVAL_S");
	return config;
}

/** Services whose node needs the database (the gateway checks it for readiness). */
const DATABASE_SERVICES: ReadonlySet<ServiceName> = new Set(["gateway", "user", "conversation", "quota", "tool", "jobs"]);

/** Services that write or serve streamed answers, and so need the generation log. */
export const GENERATION_SERVICES: ReadonlySet<ServiceName> = new Set(["gateway", "conversation"]);

export function needsDatabase(config: ChatmeshConfig): boolean {
	return config.services.some(s => DATABASE_SERVICES.has(s));
}

/** Checks that depend on what this node runs (a REPL node, for one, runs nothing). */
export function assertNodeConfig(config: ChatmeshConfig): void {
	// The embedded database belongs to one process; the nodes of a cluster share one PostgreSQL.
	if (config.transporter.length > 0 && config.databaseUrl === undefined && needsDatabase(config))
		throw new ConfigError("DATABASE_URL", "set when TRANSPORTER is set and this node runs a service that needs the database");
	// Streamed answers cross nodes through Redis: clustered writers and readers need it.
	if (config.transporter.length > 0 && config.redisUrl === undefined && config.services.some(s => GENERATION_SERVICES.has(s)))
		throw new ConfigError("REDIS_URL", "set when TRANSPORTER is set and this node runs gateway or conversation (streamed answers cross nodes through Redis)");
	// Every node of a cluster must sign and verify tokens with the same secret.
	if (config.transporter.length > 0 && config.jwtSecret === undefined && config.services.some(s => s === "gateway" || s === "user"))
		throw new ConfigError("JWT_SECRET", "set when TRANSPORTER is set (every node signs and verifies with the same secret)");
}

/** A URL with its password replaced, safe to log. */
export function redactUrl(value: string): string {
	try {
		const url = new URL(value);
		if (url.password) url.password = "***";
		return url.toString();
	} catch {
		return "(unparseable URL)";
	}
}
