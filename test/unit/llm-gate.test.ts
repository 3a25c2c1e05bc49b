import { describe, expect, it } from "vitest";
import { ConcurrencyGate } from "../../services/llm/gate";

type Release = () => void;

/** Whether a promise has settled, without waiting on it. */
async function settled<T>(promise: Promise<T>): Promise<{ done: boolean; value?: T }> {
	const pending = Symbol("pending");
	const value = await Promise.race([promise, Promise.resolve().then(() => pending)]);
	return value === pending ? { done: false } : { done: true, value: value as T };
}

const live = () => new AbortController().signal;

describe("ConcurrencyGate", () => {
	it("grants up to its concurrency at once, then makes the next one wait", async () => {
		const gate = new ConcurrencyGate(2);
		const a = await gate.acquire(live());
		const b = await gate.acquire(live());
		expect(a).toBeTypeOf("function");
		expect(b).toBeTypeOf("function");
		expect(gate.active).toBe(2);
		const c = gate.acquire(live());
		expect((await settled(c)).done).toBe(false);
		expect(gate.waiting).toBe(1);
	});

	it("hands a released slot to the waiters first come, first served", async () => {
		const gate = new ConcurrencyGate(1);
		const first = (await gate.acquire(live())) as Release;
		const order: string[] = [];
		const granted = (name: string) => (release: Release | null) => {
			order.push(name);
			return release;
		};
		const second = gate.acquire(live()).then(granted("second"));
		const third = gate.acquire(live()).then(granted("third"));
		first();
		const secondRelease = (await second) as Release;
		expect(order).toEqual(["second"]);
		expect((await settled(third)).done).toBe(false);
		expect(gate.active).toBe(1);
		secondRelease();
		await third;
		expect(order).toEqual(["second", "third"]);
	});

	it("counts a release function once, however often it is called", async () => {
		const gate = new ConcurrencyGate(1);
		const release = (await gate.acquire(live())) as Release;
		const waiter = gate.acquire(live());
		release();
		release();
		await waiter;
		expect(gate.active).toBe(1);
		const next = gate.acquire(live());
		expect((await settled(next)).done).toBe(false);
	});

	it("answers null for a signal that is already aborted, taking no slot", async () => {
		const gate = new ConcurrencyGate(1);
		const stopped = new AbortController();
		stopped.abort();
		expect(await gate.acquire(stopped.signal)).toBeNull();
		expect(gate.active).toBe(0);
	});

	it("answers null to a waiter whose signal aborts, and leaves the queue to the others", async () => {
		const gate = new ConcurrencyGate(1);
		const release = (await gate.acquire(live())) as Release;
		const stopper = new AbortController();
		const stopped = gate.acquire(stopper.signal);
		const next = gate.acquire(live());
		stopper.abort();
		expect(await stopped).toBeNull();
		expect(gate.waiting).toBe(1);
		release();
		expect(await next).toBeTypeOf("function");
		expect(gate.active).toBe(1);
	});
});
