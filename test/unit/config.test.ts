import path from "node:path";
import { describe, expect, it } from "vitest";
import { assertNodeConfig, ConfigError, loadConfig, needsDatabase, redactUrl, SERVICE_NAMES } from "../../lib/config";

function configError(env: Record<string, string>): ConfigError {
	try {
		loadConfig(env);
	} catch (err) {
		if (err instanceof ConfigError) return err;
		throw err;
	}
	throw new Error("loadConfig accepted the environment");
}

describe("loadConfig", () => {
	it("falls back to the embedded defaults when nothing is set", () => {
		const config = loadConfig({});
		expect(config.transporter).toEqual([]);
		expect(config.databaseUrl).toBeUndefined();
		expect(config.redisUrl).toBeUndefined();
		expect(config.providers).toBeUndefined();
		expect(config.services).toEqual([...SERVICE_NAMES]);
		expect(config.port).toBe(3000);
		expect(config.dataDir).toBe(path.join(process.cwd(), "data"));
		expect(config.nodeEnv).toBe("development");
		expect(config.logFormat).toBe("text");
	});

	it("reads a full cluster configuration", () => {
		const config = loadConfig({
			NODE_ENV: "production",
			TRANSPORTER: "nats://127.0.0.1:4222,nats://127.0.0.2:4222",
			DATABASE_URL: "postgres://u:p@db:5432/chatmesh",
			REDIS_URL: "redis://cache:6379/2",
			LLM_PROVIDERS: JSON.stringify([
				{ name: "vllm", baseURL: "http://gpu:8000/v1", models: ["llama"] },
				{ name: "openai", baseURL: "https://api.example.test/v1", apiKey: "k", models: ["gpt"] }
			]),
			SERVICES: "gateway",
			JWT_SECRET: "k3Jx9vQ2mP7wR4tY8uI1oA5sD6fG0hL3zX",
			PORT: "8080",
			LOG_LEVEL: "debug"
		});
		expect(config.transporter).toHaveLength(2);
		expect(config.services).toEqual(["gateway"]);
		expect(config.providers?.map(p => p.name)).toEqual(["vllm", "openai"]);
		expect(config.port).toBe(8080);
		expect(config.logFormat).toBe("json");
		expect(needsDatabase(config)).toBe(true);
	});

	it("treats blank values as unset", () => {
		expect(loadConfig({ DATABASE_URL: "  ", TRANSPORTER: "" }).databaseUrl).toBeUndefined();
	});

	it.each([
		["DATABASE_URL", "mysql://localhost/x"],
		["DATABASE_URL", "not a url"],
		["TRANSPORTER", "kafka://127.0.0.1:9092"],
		["TRANSPORTER", "TCP"],
		["REDIS_URL", "http://127.0.0.1:6379"],
		["LLM_PROVIDERS", "[{"],
		["LLM_PROVIDERS", "[]"],
		["LLM_PROVIDERS", '[{"name":"a","baseURL":"ftp://x","models":["m"]}]'],
		["LLM_PROVIDERS", '[{"name":"a","baseURL":"http://x/v1","models":[]}]'],
		["LLM_PROVIDERS", '[{"name":"a","baseURL":"http://x/v1","models":["m"]},{"name":"a","baseURL":"http://y/v1","models":["n"]}]'],
		["PORT", "70000"],
		["PORT", "eighty"],
		["LOG_LEVEL", "loud"],
		["NODE_ENV", "staging"],
		["SERVICES", "gateway,unknown"],
		["SHUTDOWN_GRACE_MS", "-1"],
		["NAMESPACE", "has space"],
		["JWT_SECRET", "too-short"],
		["JWT_SECRET", "secret"],
		["RATE_LIMITS", '{"perUser":{"chat":{"points":0,"durationS":60}}}'],
		["RATE_LIMITS", '{"perUsr":{}}'],
		["TRUST_PROXY", "yes"],
		["MODEL_TIERS", "sim-small"],
		["MODEL_TIERS", '{"cheap":"a","medium":"b"}'],
		["MODEL_TIERS", '{"cheap":"a","medium":"b","strong":""}'],
		["MODEL_TIERS", '{"cheap":"a","medium":"b","strong":"c","extra":"d"}'],
		["LLM_FIRST_TOKEN_TIMEOUT_MS", "0"],
		["LLM_FIRST_TOKEN_TIMEOUT_MS", "soon"],
		["LLM_IDLE_TIMEOUT_MS", "700000"],
		["CORS_ORIGINS", "chat.example.com"],
		["CORS_ORIGINS", "https://chat.example.com/app"],
		["CORS_ORIGINS", "https://a.example,*"]
	])("rejects %s=%s with one line naming the variable", (variable, value) => {
		const env: Record<string, string> = { [variable]: value };
		if (variable === "SERVICES") Object.assign(env, { TRANSPORTER: "nats://127.0.0.1:4222", DATABASE_URL: "postgres://db/x" });
		const err = configError(env);
		expect(err.variable).toBe(variable);
		expect(err.message.startsWith(`${variable} must be `)).toBe(true);
		expect(err.message).not.toContain("\n");
	});

	it("reads CORS_ORIGINS: same-origin only by default, a list of origins, or any", () => {
		expect(loadConfig({}).corsOrigins).toEqual([]);
		expect(loadConfig({ CORS_ORIGINS: "https://a.example, http://localhost:5173" }).corsOrigins).toEqual(["https://a.example", "http://localhost:5173"]);
		expect(loadConfig({ CORS_ORIGINS: "*" }).corsOrigins).toEqual(["*"]);
	});

	it("reads the model tiers and the stream timeouts, with their defaults", () => {
		const defaults = loadConfig({});
		expect(defaults.modelTiers).toBeUndefined();
		expect(defaults.llmFirstTokenTimeoutMs).toBe(60_000);
		expect(defaults.llmIdleTimeoutMs).toBe(30_000);
		const config = loadConfig({
			MODEL_TIERS: '{"cheap":"s","medium":"m","strong":"l"}',
			LLM_FIRST_TOKEN_TIMEOUT_MS: "1500",
			LLM_IDLE_TIMEOUT_MS: "800"
		});
		expect(config.modelTiers).toEqual({ cheap: "s", medium: "m", strong: "l" });
		expect(config.llmFirstTokenTimeoutMs).toBe(1500);
		expect(config.llmIdleTimeoutMs).toBe(800);
	});

	it("requires the tiers to name models the configured providers serve", () => {
		const LLM_PROVIDERS = JSON.stringify([{ name: "vllm", baseURL: "http://gpu:8000/v1", models: ["s", "m"] }]);
		const err = configError({ LLM_PROVIDERS, MODEL_TIERS: '{"cheap":"s","medium":"m","strong":"l"}' });
		expect(err.variable).toBe("MODEL_TIERS");
		expect(err.message).toMatch(/served by LLM_PROVIDERS$/);
		expect(loadConfig({ LLM_PROVIDERS, MODEL_TIERS: '{"cheap":"s","medium":"m","strong":"m"}' }).modelTiers?.strong).toBe("m");
	});

	it("refuses to run in production without a strong signing secret", () => {
		expect(configError({ NODE_ENV: "production" }).variable).toBe("JWT_SECRET");
		expect(configError({ NODE_ENV: "production", JWT_SECRET: "changeme" }).variable).toBe("JWT_SECRET");
		expect(configError({ NODE_ENV: "production", JWT_SECRET: "x".repeat(31) }).variable).toBe("JWT_SECRET");
		expect(loadConfig({ NODE_ENV: "production", JWT_SECRET: "x".repeat(32) }).jwtSecret).toBe("x".repeat(32));
		// Outside production an unset secret is allowed (a random one is kept in the data directory).
		expect(loadConfig({}).jwtSecret).toBeUndefined();
	});

	it("requires one shared secret on clustered nodes that sign or verify tokens", () => {
		const gateway = loadConfig({ TRANSPORTER: "nats://127.0.0.1:4222", DATABASE_URL: "postgres://db/x", REDIS_URL: "redis://r:6379", SERVICES: "gateway" });
		expect(() => assertNodeConfig(gateway)).toThrow(/^JWT_SECRET must be set when TRANSPORTER is set/);
	});

	it("requires Redis on clustered nodes that write or serve streamed answers", () => {
		const base = { TRANSPORTER: "nats://127.0.0.1:4222", DATABASE_URL: "postgres://db/x", JWT_SECRET: "z".repeat(40) };
		expect(() => assertNodeConfig(loadConfig({ ...base, SERVICES: "conversation" }))).toThrow(/^REDIS_URL must be set when TRANSPORTER is set/);
		expect(() => assertNodeConfig(loadConfig({ ...base, SERVICES: "llm" }))).not.toThrow();
	});

	it("refuses a service subset without a transporter", () => {
		expect(configError({ SERVICES: "gateway" }).variable).toBe("SERVICES");
	});

	it("requires a shared database for clustered nodes that use one", () => {
		const clustered = loadConfig({ TRANSPORTER: "nats://127.0.0.1:4222", JWT_SECRET: "y".repeat(40) });
		expect(() => assertNodeConfig(clustered)).toThrow(/^DATABASE_URL must be set when TRANSPORTER is set/);
		expect(() => assertNodeConfig(loadConfig({ TRANSPORTER: "nats://127.0.0.1:4222", SERVICES: "llm" }))).not.toThrow();
		expect(() => assertNodeConfig(loadConfig({}))).not.toThrow();
	});

	it("requires the heartbeat timeout to exceed the interval", () => {
		expect(configError({ HEARTBEAT_INTERVAL_S: "5", HEARTBEAT_TIMEOUT_S: "5" }).variable).toBe("HEARTBEAT_TIMEOUT_S");
	});

	it("reads the moderation deny list and provider, with their defaults", () => {
		const defaults = loadConfig({});
		expect(defaults.moderationDenyList).toEqual([]);
		expect(defaults.moderationProviderUrl).toBeUndefined();
		expect(defaults.moderationProviderApiKey).toBeUndefined();
		const config = loadConfig({
			MODERATION_DENY_LIST: " Foo ,bar  BAZ,foo,ｑｕｕｘ",
			MODERATION_PROVIDER_URL: "https://mod.example.test/v1",
			MODERATION_PROVIDER_API_KEY: "sk-test"
		});
		expect(config.moderationDenyList).toEqual(["foo", "bar baz", "quux"]);
		expect(config.moderationProviderUrl).toBe("https://mod.example.test/v1");
		expect(config.moderationProviderApiKey).toBe("sk-test");
	});

	it.each([
		[{ MODERATION_DENY_LIST: "foo,,bar" }, "MODERATION_DENY_LIST"],
		[{ MODERATION_DENY_LIST: "x".repeat(201) }, "MODERATION_DENY_LIST"],
		[{ MODERATION_PROVIDER_URL: "ftp://mod.example.test/v1" }, "MODERATION_PROVIDER_URL"],
		[{ MODERATION_PROVIDER_URL: "not a url" }, "MODERATION_PROVIDER_URL"],
		[{ MODERATION_PROVIDER_URL: "http://m/v1", MODERATION_PROVIDER_API_KEY: "two words" }, "MODERATION_PROVIDER_API_KEY"],
		[{ MODERATION_PROVIDER_API_KEY: "sk-orphan" }, "MODERATION_PROVIDER_API_KEY"]
	])("rejects moderation setting %o with one line naming %s", (env, variable) => {
		const err = configError(env);
		expect(err.variable).toBe(variable);
		expect(err.message.startsWith(`${variable} must be `)).toBe(true);
		expect(err.message).not.toContain("\n");
	});

	it("never echoes the rejected value, which may hold a secret", () => {
		const err = configError({ DATABASE_URL: "mysql://user:s3cret@host/db" });
		expect(err.message).not.toContain("s3cret");
	});

	it("redacts passwords from URLs meant for logs", () => {
		expect(redactUrl("postgres://u:s3cret@db/x")).toBe("postgres://u:***@db/x");
	});
});
