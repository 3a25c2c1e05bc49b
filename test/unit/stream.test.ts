import { describe, expect, it } from "vitest";
import { APPLIED, applyEvent, DUPLICATE, ENDED, GAP, NUMBERED_EVENTS, newStream, type Stream } from "../../public/js/stream.js";

// The web app's exactly-once rule for one answer's numbered events, without a browser.
const chunk = (seq: number, delta = `t${seq} `) => ({ generationId: "g1", seq, delta });
const fresh = (): Stream => newStream({ conversationId: "c1", generationId: "g1" });
const feed = (stream: Stream, events: Array<ReturnType<typeof chunk>>) => events.map(e => applyEvent(stream, "generation:chunk", e));

describe("a stream's numbered events", () => {
	it("applies chunks in order and keeps the last number", () => {
		const stream = fresh();
		expect(feed(stream, [chunk(1), chunk(2), chunk(3)])).toEqual([APPLIED, APPLIED, APPLIED]);
		expect(stream.text).toBe("t1 t2 t3 ");
		expect(stream.lastSeq).toBe(3);
	});

	it("drops a chunk it has already applied, and one without a number", () => {
		const stream = fresh();
		feed(stream, [chunk(1), chunk(2)]);
		expect(feed(stream, [chunk(2), chunk(1)])).toEqual([DUPLICATE, DUPLICATE]);
		expect(applyEvent(stream, "generation:chunk", { generationId: "g1", delta: "x" })).toBe(DUPLICATE);
		expect(stream.text).toBe("t1 t2 ");
		expect(stream.lastSeq).toBe(2);
	});

	it("applies a replay that overlaps the live events once", () => {
		// Live events 1..3 arrived; the resubscription after 1 replays 2..5 while 4 arrives live too.
		const stream = fresh();
		feed(stream, [chunk(1), chunk(2), chunk(3)]);
		feed(stream, [chunk(2), chunk(4), chunk(3), chunk(4), chunk(5)]);
		expect(stream.text).toBe("t1 t2 t3 t4 t5 ");
		expect(stream.lastSeq).toBe(5);
	});

	it("reports a gap without applying it, so the app resubscribes after the last number", () => {
		const stream = fresh();
		feed(stream, [chunk(1), chunk(2)]);
		expect(applyEvent(stream, "generation:chunk", chunk(4))).toBe(GAP);
		expect(stream.lastSeq).toBe(2);
		expect(stream.text).toBe("t1 t2 ");
		// The replay after 2 fills it.
		expect(feed(stream, [chunk(3), chunk(4)])).toEqual([APPLIED, APPLIED]);
		expect(stream.text).toBe("t1 t2 t3 t4 ");
	});

	it("resumes after a reload from the saved number and text", () => {
		const stream = newStream({ conversationId: "c1", generationId: "g1", lastSeq: 2, text: "t1 t2 " });
		expect(feed(stream, [chunk(1), chunk(2), chunk(3)])).toEqual([DUPLICATE, DUPLICATE, APPLIED]);
		expect(stream.text).toBe("t1 t2 t3 ");
	});

	it("ends at the terminal event and applies nothing after it", () => {
		const stream = fresh();
		feed(stream, [chunk(1)]);
		expect(applyEvent(stream, "generation:done", { generationId: "g1", seq: 2, status: "completed" })).toBe(APPLIED);
		expect(stream.status).toBe("completed");
		expect(feed(stream, [chunk(3)])).toEqual([ENDED]);
		expect(stream.text).toBe("t1 ");
	});

	it("ends with the error's code and drops blocked output", () => {
		const failed = fresh();
		feed(failed, [chunk(1)]);
		applyEvent(failed, "generation:error", { generationId: "g1", seq: 2, code: "UPSTREAM_ERROR", message: "down" });
		expect(failed.status).toBe("failed");
		expect(failed.error).toEqual({ code: "UPSTREAM_ERROR", message: "down" });

		const blocked = fresh();
		feed(blocked, [chunk(1)]);
		applyEvent(blocked, "generation:done", { generationId: "g1", seq: 2, status: "blocked" });
		expect(blocked.status).toBe("blocked");
		expect(blocked.text).toBe("");
	});

	it("tracks tool calls through their numbered start and result", () => {
		const stream = fresh();
		applyEvent(stream, "tool:start", { seq: 1, calls: [{ id: "k1", name: "calculator", arguments: { expression: "2+3" } }] });
		applyEvent(stream, "tool:result", { seq: 2, results: [{ id: "k1", name: "calculator", status: "ok", output: "5", durationMs: 3 }] });
		applyEvent(stream, "tool:result", { seq: 2, results: [{ id: "k1", status: "error" }] });
		expect(stream.tools).toEqual([{ id: "k1", name: "calculator", arguments: { expression: "2+3" }, status: "ok", output: "5", durationMs: 3 }]);
		expect(NUMBERED_EVENTS).toEqual(["generation:chunk", "tool:start", "tool:result", "generation:done", "generation:error"]);
	});
});
