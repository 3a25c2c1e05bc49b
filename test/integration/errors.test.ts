import { Errors, ServiceBroker, type ServiceSchema } from "moleculer";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../lib/config";
import {
	BadRequestError,
	ChatmeshClientError,
	ERR_NOT_FOUND,
	ERR_QUOTA_EXCEEDED,
	ERR_UNAVAILABLE,
	ERR_UPSTREAM_ERROR,
	ERR_UPSTREAM_TIMEOUT,
	httpStatusOf,
	isDependencyOutage,
	NotFoundError,
	OUTAGE_RETRY_AFTER_S,
	QuotaExceededError,
	UnavailableError,
	UpstreamError
} from "../../lib/errors";
import { NODE_STOPPING } from "../../lib/node-loss";
import { brokerOptions } from "../../moleculer.config";
import { toPublicError } from "../../services/gateway/http-errors";
import { TEST_NATS_URL, uniqueNamespace } from "../helpers/infra";

// Two brokers on the real NATS: errors thrown on one node must arrive on the other in their
// own classes, with type, code and data intact, and must not be retried.
const namespace = uniqueNamespace("errors");
const config = loadConfig({ NAMESPACE: namespace, TRANSPORTER: TEST_NATS_URL, LOG_LEVEL: "error", SERVICES: "llm" });
const caller = new ServiceBroker({ ...brokerOptions(config), nodeID: "caller" });
const callee = new ServiceBroker({ ...brokerOptions(config), nodeID: "callee" });
let calls = 0;

const Thrower: ServiceSchema = {
	name: "thrower",
	actions: {
		notFound: () => {
			calls += 1;
			throw new NotFoundError("conversation", "c-1");
		},
		quota: () => {
			throw new QuotaExceededError("2026-12-01T00:00:00.000Z", { limit: 10 });
		},
		upstream: () => {
			calls += 1;
			throw new UpstreamError("model timed out", ERR_UPSTREAM_TIMEOUT, { provider: "p" });
		},
		flaky: () => {
			calls += 1;
			throw new Errors.MoleculerRetryableError("try again", 503, "FLAKY");
		},
		/** Answers as a node that is stopping does: nothing was done, another node may do it. */
		stopping: () => {
			calls += 1;
			throw new UnavailableError("stopping", { reason: NODE_STOPPING });
		},
		plain: () => {
			throw new Error("secret internals");
		},
		databaseDown: () => {
			// What pg throws when the database refuses the connection.
			throw Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5433"), { code: "ECONNREFUSED", errno: -111, syscall: "connect" });
		},
		connectionLost: () => {
			// What pg throws when the server goes away mid-query.
			throw new Error("Connection terminated unexpectedly");
		},
		upstreamRefused: () => {
			throw new UpstreamError("connect ECONNREFUSED 10.0.0.9:8000");
		}
	}
};

beforeAll(async () => {
	callee.createService(Thrower);
	await Promise.all([caller.start(), callee.start()]);
	await caller.waitForServices("thrower", 10_000);
});
afterAll(async () => {
	await Promise.all([caller.stop(), callee.stop()]);
});

describe("errors across nodes", () => {
	it("keeps a client error's class, type, status and data", async () => {
		const err = await caller.call("thrower.notFound").catch((e: unknown) => e);
		expect(err).toBeInstanceOf(NotFoundError);
		expect(err).toBeInstanceOf(ChatmeshClientError);
		expect(err).toMatchObject({ type: ERR_NOT_FOUND, code: 404, data: { resource: "conversation", id: "c-1" } });
		expect((err as { nodeID?: string }).nodeID).toBe("callee");
		expect(httpStatusOf(err)).toBe(404);
	});

	it("keeps data a constructor would derive differently", async () => {
		const err = await caller.call("thrower.quota").catch((e: unknown) => e);
		expect(err).toBeInstanceOf(QuotaExceededError);
		expect(err).toMatchObject({ type: ERR_QUOTA_EXCEEDED, code: 429, data: { resetAt: "2026-12-01T00:00:00.000Z", limit: 10 } });
	});

	it("does not retry a non-retryable server error even with retries requested", async () => {
		calls = 0;
		const err = await caller.call("thrower.upstream", {}, { retries: 3 }).catch((e: unknown) => e);
		expect(err).toBeInstanceOf(UpstreamError);
		expect(err).toMatchObject({ type: ERR_UPSTREAM_TIMEOUT, code: 504, retryable: false });
		expect(calls).toBe(1);
	});

	it("does not retry other retryable errors either: only a lost node's calls are made again", async () => {
		calls = 0;
		const err = await caller.call("thrower.flaky", {}, { retries: 2 }).catch((e: unknown) => e);
		expect(err).toMatchObject({ type: "FLAKY" });
		expect(calls).toBe(1);
	});

	it("makes a call again when its node was stopping, up to the policy's bound (the contrast to the tests above)", async () => {
		calls = 0;
		const err = await caller.call("thrower.stopping").catch((e: unknown) => e);
		expect(err).toMatchObject({ type: ERR_UNAVAILABLE, data: { reason: NODE_STOPPING } });
		expect(calls).toBe(3);
	});

	it("maps an unknown error to 500", async () => {
		const err = await caller.call("thrower.plain").catch((e: unknown) => e);
		expect(httpStatusOf(err)).toBe(500);
	});
});

describe("httpStatusOf", () => {
	it("maps types, then codes, then 500", () => {
		expect(httpStatusOf(new BadRequestError("x"))).toBe(400);
		expect(httpStatusOf({ type: "SERVICE_NOT_AVAILABLE", code: 500 })).toBe(503);
		expect(httpStatusOf({ code: 418 })).toBe(418);
		expect(httpStatusOf({ code: 200 })).toBe(500);
		expect(httpStatusOf(undefined)).toBe(500);
	});
});

describe("dependency outages", () => {
	const unavailable = { code: 503, type: ERR_UNAVAILABLE, data: { retryAfter: OUTAGE_RETRY_AFTER_S } };

	it("answers 503 SERVICE_UNAVAILABLE for a database that refuses or drops connections on another node", async () => {
		for (const action of ["thrower.databaseDown", "thrower.connectionLost"]) {
			const err = await caller.call(action).catch((e: unknown) => e);
			expect(isDependencyOutage(err)).toBe(true);
			expect(toPublicError(err, "req-1")).toMatchObject(unavailable);
		}
	});

	it("keeps a typed error's own status, whatever its message says", async () => {
		const err = await caller.call("thrower.upstreamRefused").catch((e: unknown) => e);
		expect(toPublicError(err, "req-1")).toMatchObject({ code: 502, type: ERR_UPSTREAM_ERROR });
	});

	it("answers 503 for Moleculer's timeouts and unreachable services, and 500 for anything else", () => {
		const { RequestTimeoutError, ServiceNotAvailableError, ServiceNotFoundError } = Errors;
		for (const err of [
			new RequestTimeoutError({ action: "conversation.list", nodeID: "n-1" }),
			new ServiceNotAvailableError({ action: "conversation.list", nodeID: "n-1" }),
			new ServiceNotFoundError({ action: "conversation.list" }),
			Object.assign(new Error("Stream isn't writeable and enableOfflineQueue options is false"), { name: "Error" }),
			Object.assign(new Error("Reached the max retries per request limit (which is 1)."), { name: "MaxRetriesPerRequestError" })
		])
			expect(toPublicError(err, "req-1")).toMatchObject(unavailable);
		expect(toPublicError(new Error("secret internals"), "req-1")).toMatchObject({ code: 500, type: "INTERNAL_ERROR" });
	});
});
