import { describe, expect, it } from "vitest";
import { loadConfig } from "../../lib/config";
import { NotFoundError, UpstreamError } from "../../lib/errors";
import { jsonLine, loggerOptions } from "../../lib/logger";
import { acceptRequestId, enableRequestScopes, runInRequest, spanIdOf, traceIdOf } from "../../lib/request-context";

const bindings = { nodeID: "n1", ns: "test", mod: "llm", svc: "llm" };
const parse = (line: string) => JSON.parse(line) as Record<string, unknown>;

describe("JSON log lines", () => {
	it("join the strings into msg and lift an object's fields, without letting them overwrite the line's own", () => {
		const line = parse(jsonLine("warn", ["Model provider failed", { provider: "sim", status: 500, level: "fake", ts: 1 }], bindings));
		expect(line).toMatchObject({ level: "warn", msg: "Model provider failed", nodeID: "n1", mod: "llm", provider: "sim", status: 500 });
		expect(line.ts).not.toBe(1);
	});

	it("write typed errors as their fields without a stack, and errors of no known kind with it", () => {
		const typed = parse(jsonLine("warn", ["x", { err: new UpstreamError("Model provider failed", "UPSTREAM_ERROR", { provider: "sim" }) }], bindings));
		expect(typed.err).toEqual({ name: "UpstreamError", message: "Model provider failed", type: "UPSTREAM_ERROR", code: 502, data: { provider: "sim" } });
		const client = parse(jsonLine("debug", [new NotFoundError("conversation", "c1")], bindings));
		expect(client.err).not.toHaveProperty("stack");
		const unknown = parse(jsonLine("error", ["Request failed", { err: new TypeError("x is not a function") }], bindings));
		expect(unknown.err).toMatchObject({ name: "TypeError", message: "x is not a function" });
		expect((unknown.err as { stack: string }).stack).toMatch(/\n\s+at /);
	});

	it("cut the password out of a URL an error's message quotes, in its message and its stack", () => {
		const err = new Error("connect failed: postgres://admin:hunter2-hunter2@db:5432/chat and redis://:s3cret-pass@cache:6379");
		const text = jsonLine("error", ["Request failed", { err }], bindings);
		expect(text).not.toContain("hunter2");
		expect(text).not.toContain("s3cret-pass");
		expect(parse(text).err).toMatchObject({ message: "connect failed: postgres://admin:[redacted]@db:5432/chat and redis://:[redacted]@cache:6379" });
		expect((parse(text).err as { stack: string }).stack).toContain("postgres://admin:[redacted]@db");
	});

	it("replace credentials by field name, at any depth, and survive a cycle", () => {
		const cyclic: Record<string, unknown> = { name: "loop" };
		cyclic.self = cyclic;
		const text = jsonLine(
			"info",
			["req", { password: "hunter2-hunter2", headers: { Authorization: "Bearer abc.def.ghi" }, api_key: "k-123456789", tokensUsed: 12, cyclic }],
			bindings
		);
		expect(text).not.toContain("hunter2");
		expect(text).not.toContain("abc.def.ghi");
		expect(text).not.toContain("k-123456789");
		expect(parse(text)).toMatchObject({ password: "[redacted]", headers: { Authorization: "[redacted]" }, api_key: "[redacted]", tokensUsed: 12 });
	});

	it("carry the request id of the scope they are written in, and its trace id when the node traces and the request is sampled", () => {
		enableRequestScopes();
		const sampled = { id: "c1", requestID: "turn-1", tracing: true };
		expect(parse(runInRequest(sampled, () => jsonLine("info", ["x"], bindings, true)))).toMatchObject({ requestId: "turn-1", traceId: traceIdOf("turn-1") });
		expect(parse(runInRequest(sampled, () => jsonLine("info", ["x"], bindings, false)))).not.toHaveProperty("traceId");
		const unsampled = parse(runInRequest({ ...sampled, tracing: false }, () => jsonLine("info", ["x"], bindings, true)));
		expect(unsampled).toMatchObject({ requestId: "turn-1" });
		expect(unsampled).not.toHaveProperty("traceId");
		expect(parse(jsonLine("info", ["outside"], bindings, true))).not.toHaveProperty("requestId");
	});

	it("never carry a configured secret, wherever it appears in the line", () => {
		const apiKey = "sk-live-0123456789abcdef";
		const config = loadConfig({
			NODE_ENV: "test",
			LOG_FORMAT: "json",
			LLM_PROVIDERS: JSON.stringify([{ name: "p", baseURL: "http://127.0.0.1:1/v1", apiKey, models: ["m"] }])
		});
		const format = (loggerOptions(config).options as { formatter: (level: string, args: unknown[], b: typeof bindings) => string[] }).formatter;
		const [line] = format("warn", [`provider said: Incorrect API key provided: ${apiKey}`, { cause: `key ${apiKey}` }], bindings);
		expect(line).not.toContain(apiKey);
		expect(parse(line).msg).toBe("provider said: Incorrect API key provided: [redacted]");
	});
});

describe("request ids", () => {
	it("accept a client's id only when it is short and plain", () => {
		expect(acceptRequestId("turn-1_a.b:c")).toBe("turn-1_a.b:c");
		expect(acceptRequestId("x".repeat(64))).toBe("x".repeat(64));
		for (const bad of ["x".repeat(65), "", "a b", "a<b>", "new\nline", "caf\u00e9"]) expect(acceptRequestId(bad)).toBeUndefined();
		expect(acceptRequestId(["a", "b"])).toBeUndefined();
		expect(acceptRequestId(undefined)).toBeUndefined();
	});

	it("become Zipkin trace ids: a UUID without its dashes, anything else hashed to 32 hex digits, always the same", () => {
		expect(traceIdOf("55434fdd-9b84-47fd-8783-a5e483fb7adb")).toBe("55434fdd9b8447fd8783a5e483fb7adb");
		expect(traceIdOf("turn-1")).toMatch(/^[0-9a-f]{32}$/);
		expect(traceIdOf("turn-1")).toBe(traceIdOf("turn-1"));
		expect(traceIdOf("turn-1")).not.toBe(traceIdOf("turn-2"));
		expect(spanIdOf("55434fdd-9b84-47fd-8783-a5e483fb7adb")).toBe("55434fdd9b8447fd");
		expect(spanIdOf("not-hex")).toMatch(/^[0-9a-f]{16}$/);
	});
});
