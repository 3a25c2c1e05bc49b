import { describe, expect, it } from "vitest";
import { OutputWindow } from "../../services/moderation/output-window";

/** Feeds the text in deltas of the given sizes (cycled) and returns every window, the final one last. */
function windowsOf(text: string, deltaSizes: number[], window = new OutputWindow()): string[] {
	const out: string[] = [];
	for (let at = 0, i = 0; at < text.length; i++) {
		const size = deltaSizes[i % deltaSizes.length] ?? 1;
		out.push(...window.push(text.slice(at, at + size)));
		at += size;
	}
	const rest = window.finish();
	if (rest !== undefined) out.push(rest);
	return out;
}

const text = (length: number): string => Array.from({ length }, (_, i) => String.fromCharCode(97 + (i % 26))).join("");

describe("OutputWindow", () => {
	it("emits 200-character windows every 150 characters, then the tail", () => {
		const body = text(500);
		const windows = windowsOf(body, [7]);
		expect(windows).toEqual([body.slice(0, 200), body.slice(150, 350), body.slice(300, 500)]);
	});

	it("returns the whole text as the final window when it never fills one", () => {
		const w = new OutputWindow();
		expect(w.push("Hello, ")).toEqual([]);
		expect(w.push("world")).toEqual([]);
		expect(w.finish()).toBe("Hello, world");
		expect(w.finish()).toBeUndefined();
	});

	it("returns no final window when the last full window covered everything", () => {
		const w = new OutputWindow({ size: 10, overlap: 4 });
		expect(w.push(text(10))).toEqual([text(10)]);
		expect(w.finish()).toBeUndefined();
		expect(new OutputWindow().finish()).toBeUndefined();
	});

	it("emits several windows for one large delta", () => {
		const body = text(1000);
		const windows = new OutputWindow().push(body);
		expect(windows).toHaveLength(6);
		expect(windows[5]).toBe(body.slice(750, 950));
	});

	it("keeps every phrase of up to overlap + 1 characters whole in some window, however the deltas split it", () => {
		const filler = "x".repeat(1000);
		const phrase = "forbidden-phrase-of-fifty-one-characters-long-ok!!";
		expect(phrase.length).toBeLessThanOrEqual(51);
		for (let offset = 0; offset < 320; offset += 7) {
			const body = filler.slice(0, offset) + phrase + filler.slice(0, 400);
			for (const sizes of [[1], [3, 17], [64], [250]]) {
				const windows = windowsOf(body, sizes);
				expect(
					windows.some(w => w.includes(phrase)),
					`offset ${offset}, deltas ${sizes}`
				).toBe(true);
				// And the windows cover the text: the last one ends where the text ends.
				expect(body.endsWith(windows.at(-1) ?? "")).toBe(true);
			}
		}
	});

	it("takes its sizes as options and refuses impossible ones", () => {
		expect(windowsOf("abcdefghij", [1], new OutputWindow({ size: 4, overlap: 1 }))).toEqual(["abcd", "defg", "ghij"]);
		expect(() => new OutputWindow({ size: 50, overlap: 50 })).toThrow(RangeError);
		expect(() => new OutputWindow({ size: 0 })).toThrow(RangeError);
		const done = new OutputWindow();
		done.finish();
		expect(() => done.push("late")).toThrow(/after finish/);
	});
});
