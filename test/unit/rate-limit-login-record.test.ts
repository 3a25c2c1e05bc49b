import { ServiceBroker } from "moleculer";
import { afterAll, describe, expect, it } from "vitest";
import { DEFAULT_RATE_LIMITS, METRIC_LOGIN_FAILURES_UNCOUNTED, RateLimiter, type RateLimitDecision } from "../../services/gateway/rate-limit";

// A failed sign-in that the limiter cannot count still gets its 401 (fail-open), but never
// silently: the error is logged and counted in the broker's metrics.
const broker = new ServiceBroker({ logger: false, metrics: { enabled: true } });
afterAll(() => broker.stop());

const settings = { ...DEFAULT_RATE_LIMITS, keyPrefix: "t-login-record:rl" };

/** A logger that keeps what it is told. */
function recordingLogger() {
	const errors: unknown[][] = [];
	return { errors, warn: () => {}, error: (msg: string, ...a: unknown[]) => void errors.push([msg, ...a]) };
}

/** A limiter whose failure store is broken beyond its memory fallback. */
class BrokenLoginStore extends RateLimiter {
	override async loginFailed(): Promise<RateLimitDecision> {
		throw new Error("login failure store unavailable");
	}
}

const uncounted = () => broker.metrics.getMetric(METRIC_LOGIN_FAILURES_UNCOUNTED)?.get()?.value ?? 0;

describe("recording a failed sign-in", () => {
	it("answers the decision and counts nothing as lost when the store works", async () => {
		const logger = recordingLogger();
		const limiter = new RateLimiter({ settings, logger, metrics: broker.metrics });
		const before = uncounted();
		expect(await limiter.recordLoginFailure("ok@example.com", "192.0.2.1")).toMatchObject({ allowed: true, scope: "login" });
		expect(uncounted()).toBe(before);
		expect(logger.errors).toHaveLength(0);
	});

	it("lets the sign-in answer go out, and logs and counts the failure it could not record", async () => {
		const logger = recordingLogger();
		const limiter = new BrokenLoginStore({ settings, logger, metrics: broker.metrics });
		const before = uncounted();
		expect(await limiter.recordLoginFailure("victim@example.com", "192.0.2.2")).toBeUndefined();
		expect(await limiter.recordLoginFailure("victim@example.com", "192.0.2.2")).toBeUndefined();
		expect(uncounted()).toBe(before + 2);
		expect(logger.errors).toHaveLength(2);
		expect(String(logger.errors[0][0])).toMatch(/could not be counted/);
		expect(String(logger.errors[0][1])).toMatch(/store unavailable/);
		// No email or address in the log line.
		expect(JSON.stringify(logger.errors)).not.toMatch(/victim|192\.0\.2\.2/);
	});
});
