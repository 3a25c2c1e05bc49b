import { describe, expect, it } from "vitest";
import {
	applyDone,
	applyProgress,
	applySnapshot,
	downloadName,
	isFinished,
	newJob,
	nextPollMs,
	type PanelJob,
	percent,
	POLL_OFFLINE_MS,
	POLL_SAFETY_MS,
	statusText
} from "../../public/js/jobs.js";

// The web app's jobs panel without a browser: live events and polls that cross never move a job backwards.
const fresh = (): PanelJob => newJob({ id: "j1", kind: "report", label: "Report · Tea" });

describe("a job in the panel", () => {
	it("moves forward with live progress and ends with the final state", () => {
		const job = fresh();
		expect(statusText(job)).toBe("Waiting to start…");
		expect(applyProgress(job, { current: 1, total: 4, step: "outline" })).toBe(true);
		expect(job.state).toBe("running");
		expect(percent(job)).toBe(25);
		expect(statusText(job)).toBe("Outline (1 of 4)");
		expect(applyDone(job, { state: "succeeded" })).toBe(true);
		expect(isFinished(job)).toBe(true);
		expect(percent(job)).toBe(100);
		expect(job.progress.current).toBe(4);
		expect(statusText(job)).toBe("Ready");
	});

	it("ignores an older progress report that arrives after a newer one", () => {
		const job = fresh();
		applyProgress(job, { current: 3, total: 5, step: "section 2 of 3" });
		expect(applyProgress(job, { current: 2, total: 5, step: "section 1 of 3" })).toBe(false);
		expect(job.progress).toEqual({ current: 3, total: 5, step: "section 2 of 3" });
		expect(applyProgress(job, { current: 3, total: 5, step: "section 2 of 3" })).toBe(false);
	});

	it("keeps the first final state: a late poll or event changes nothing", () => {
		const job = fresh();
		applyDone(job, { state: "cancelled" });
		expect(applyDone(job, { state: "succeeded" })).toBe(false);
		expect(applyProgress(job, { current: 5, total: 5, step: "summary" })).toBe(false);
		expect(applySnapshot(job, { state: "running", progress: { current: 1, total: 5, step: "outline" } })).toBe(false);
		expect(job.state).toBe("cancelled");
	});

	it("takes state, progress, error and summary from a poll", () => {
		const job = fresh();
		expect(applySnapshot(job, { state: "running", attempts: 1, progress: { current: 2, total: 6, step: "section 1 of 4" } })).toBe(true);
		expect(job.progress.current).toBe(2);
		expect(
			applySnapshot(job, {
				state: "failed",
				attempts: 1,
				progress: { current: 2, total: 6, step: "section 1 of 4" },
				error: { code: "CONTENT_BLOCKED", message: "Blocked by the content policy" }
			})
		).toBe(true);
		expect(statusText(job)).toBe("Failed: Blocked by the content policy");

		const done = fresh();
		applySnapshot(done, { state: "succeeded", attempts: 1, progress: { current: 6, total: 6, step: "summary" }, result: { summary: { title: "Tea" } } });
		expect(done.summary).toEqual({ title: "Tea" });
		expect(done.state).toBe("succeeded");
		// The record may also carry the summary as its result itself.
		const flat = fresh();
		applySnapshot(flat, { state: "succeeded", attempts: 1, result: { title: "Tea" } });
		expect(flat.summary).toEqual({ title: "Tea" });
	});

	it("starts progress afresh when a poll shows a new delivery", () => {
		const job = fresh();
		applySnapshot(job, { state: "running", attempts: 1, progress: { current: 4, total: 6, step: "section 3 of 4" } });
		expect(applySnapshot(job, { state: "queued", attempts: 2, progress: { current: 0, total: 0, step: "" } })).toBe(true);
		expect(job.state).toBe("queued");
		expect(statusText(job)).toBe("Waiting to try again…");
		applySnapshot(job, { state: "running", attempts: 2, progress: { current: 2, total: 6, step: "section 1 of 4" } });
		expect(job.progress.current).toBe(2);
	});

	it("ignores malformed progress and unknown final states", () => {
		const job = fresh();
		expect(applyProgress(job, { current: Number.NaN, total: 3, step: "x" })).toBe(false);
		expect(applyProgress(job, null)).toBe(false);
		expect(applyDone(job, { state: "exploded" })).toBe(false);
		expect(job.state).toBe("queued");
	});

	it("is polled often while the socket is away, rarely while it is up, never once finished", () => {
		const job = fresh();
		expect(nextPollMs(job, { connected: false })).toBe(POLL_OFFLINE_MS);
		expect(nextPollMs(job, { connected: true })).toBe(POLL_SAFETY_MS);
		applyDone(job, { state: "dead", error: "upstream kept failing" });
		expect(nextPollMs(job, { connected: false })).toBeNull();
		expect(statusText(job)).toBe("Failed after several tries: upstream kept failing");
	});

	it("names its download after the server's Content-Disposition, else after the job", () => {
		const job = fresh();
		expect(downloadName('attachment; filename="report-j1.md"', job)).toBe("report-j1.md");
		expect(downloadName("attachment; filename*=UTF-8''chatmesh-export-2026-12-01.json", job)).toBe("chatmesh-export-2026-12-01.json");
		expect(downloadName("attachment; filename=plain.md", job)).toBe("plain.md");
		expect(downloadName(null, job)).toBe("report-j1.md");
	});
});
