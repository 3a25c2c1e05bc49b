import { describe, expect, it } from "vitest";
import { CircuitBreaker } from "../../services/llm/breaker";

// The per-provider breaker with an injected clock: no timers, the test moves time itself.
function breaker(failureThreshold = 3, openMs = 1000) {
	const clock = { now: 10_000 };
	return { clock, breaker: new CircuitBreaker({ failureThreshold, openMs }, () => clock.now) };
}

/** A breaker that opened at its first fault and whose openMs has just passed. */
function halfOpen() {
	const made = breaker(1, 1000);
	made.breaker.failure();
	made.clock.now += 1000;
	return made;
}

describe("CircuitBreaker", () => {
	it("stays closed below the threshold of consecutive faults, and a success resets the count", () => {
		const { breaker: b } = breaker(3);
		expect(b.failure()).toBe(false);
		expect(b.failure()).toBe(false);
		b.success();
		expect(b.failure()).toBe(false);
		expect(b.failure()).toBe(false);
		expect(b.state).toBe("closed");
		expect(b.tryAcquire()).toBe(true);
	});

	it("opens at the threshold (the failure that opens it says so) and refuses requests while open", () => {
		const { breaker: b, clock } = breaker(3, 1000);
		b.failure();
		b.failure();
		expect(b.failure()).toBe(true);
		expect(b.state).toBe("open");
		expect(b.tryAcquire()).toBe(false);
		clock.now += 999;
		expect(b.tryAcquire()).toBe(false);
		expect(b.state).toBe("open");
	});

	it("lets exactly one probe through once openMs has passed", () => {
		const { breaker: b } = halfOpen();
		expect(b.state).toBe("half-open");
		expect(b.tryAcquire()).toBe(true);
		expect(b.tryAcquire()).toBe(false);
		expect(b.state).toBe("half-open");
	});

	it("closes when the probe succeeds", () => {
		const { breaker: b } = halfOpen();
		b.tryAcquire();
		b.success();
		expect(b.state).toBe("closed");
		expect(b.tryAcquire()).toBe(true);
		expect(b.tryAcquire()).toBe(true);
	});

	it("opens again for another openMs when the probe fails", () => {
		const { breaker: b, clock } = breaker(3, 1000);
		b.failure();
		b.failure();
		b.failure();
		clock.now += 1000;
		expect(b.tryAcquire()).toBe(true);
		// A single failed probe reopens it, whatever the threshold.
		expect(b.failure()).toBe(true);
		expect(b.state).toBe("open");
		expect(b.tryAcquire()).toBe(false);
		clock.now += 999;
		expect(b.tryAcquire()).toBe(false);
		clock.now += 1;
		expect(b.tryAcquire()).toBe(true);
	});

	it("frees the probe slot when the probe is released without a verdict, staying half-open", () => {
		const { breaker: b } = halfOpen();
		expect(b.tryAcquire()).toBe(true);
		b.release();
		expect(b.state).toBe("half-open");
		expect(b.tryAcquire()).toBe(true);
	});

	it("does not count a failure reported while already open as a new opening", () => {
		const { breaker: b } = breaker(1, 1000);
		expect(b.failure()).toBe(true);
		expect(b.failure()).toBe(false);
		expect(b.state).toBe("open");
	});
});
