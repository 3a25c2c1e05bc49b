/** Which failures a job retries, and how long it waits: the policy the engine applies between attempts. */
import { describe, expect, it } from "vitest";
import {
	ContentBlockedError,
	ERR_UPSTREAM_BAD_REQUEST,
	ERR_UPSTREAM_TIMEOUT,
	QuotaExceededError,
	UnavailableError,
	UpstreamError,
	BadRequestError
} from "../../lib/errors";
import { backoffMs, errorRecord, isRetryable } from "../../services/jobs/retry";

describe("job retries", () => {
	it("retries model timeouts and 5xx, rate limits, lost nodes and outages; not bad input, blocked content or quota", () => {
		expect(isRetryable(new UpstreamError("timed out", ERR_UPSTREAM_TIMEOUT))).toBe(true);
		expect(isRetryable(new UpstreamError("502 from the provider"))).toBe(true);
		expect(isRetryable({ type: "REQUEST_REJECTED", code: 503, message: "node left" })).toBe(true);
		expect(isRetryable({ type: "SERVICE_NOT_FOUND", code: 404, message: "Service 'llm.chat' is not found." })).toBe(true);
		expect(isRetryable(new UnavailableError("database down"))).toBe(true);
		expect(isRetryable({ type: "RATE_LIMITED", code: 429, message: "slow down" })).toBe(true);
		expect(isRetryable({ type: "UPSTREAM_RATE_LIMITED", code: 429, message: "provider says slow down" })).toBe(true);
		expect(isRetryable({ type: "INTERNAL_ERROR", code: 500, message: "a bug" })).toBe(false);
		expect(isRetryable(Object.assign(new Error("Connection terminated unexpectedly"), {}))).toBe(true);
		expect(isRetryable(new BadRequestError("bad"))).toBe(false);
		expect(isRetryable(new ContentBlockedError("no"))).toBe(false);
		expect(isRetryable(new QuotaExceededError(new Date().toISOString()))).toBe(false);
		expect(isRetryable(new UpstreamError("the provider refused the request", ERR_UPSTREAM_BAD_REQUEST))).toBe(false);
		expect(isRetryable(new TypeError("a bug"))).toBe(false);
	});

	it("waits base × 2^(attempt−1), capped, half fixed and half random, so waits grow", () => {
		const policy = { maxAttempts: 6, baseDelayMs: 100, maxDelayMs: 1000 };
		expect([1, 2, 3, 4, 5].map(a => backoffMs(policy, a, () => 0))).toEqual([50, 100, 200, 400, 500]);
		expect([1, 2, 3, 4, 5].map(a => backoffMs(policy, a, () => 1))).toEqual([100, 200, 400, 800, 1000]);
		for (let attempt = 1; attempt < 4; attempt++) expect(backoffMs(policy, attempt + 1, () => 0)).toBeGreaterThanOrEqual(backoffMs(policy, attempt, () => 1));
	});

	it("records an error by its type and message, and whether it was retryable", () => {
		expect(errorRecord(new UpstreamError("timed out", ERR_UPSTREAM_TIMEOUT))).toMatchObject({
			type: ERR_UPSTREAM_TIMEOUT,
			message: "timed out",
			retryable: true
		});
		expect(errorRecord("plain")).toMatchObject({ type: "INTERNAL_ERROR", message: "plain", retryable: false });
	});
});

describe("JOBS_SCHEDULES", () => {
	it("takes cron expressions or off by schedule name and refuses anything else in one line", async () => {
		const { loadConfig, ConfigError } = await import("../../lib/config");
		expect(loadConfig({ JOBS_SCHEDULES: '{"quota-reset":"*/5 * * * * *","job-purge":"off"}' }).jobs.schedules).toEqual({
			"quota-reset": "*/5 * * * * *",
			"job-purge": "off"
		});
		for (const bad of ['{"quota-reset":"every minute"}', "[]", '{"Quota":"* * * * *"}', "not json"])
			expect(() => loadConfig({ JOBS_SCHEDULES: bad }), bad).toThrow(ConfigError);
	});
});
