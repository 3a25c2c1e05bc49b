/**
 * The jobs panel's logic, without DOM or socket. A job's news comes by three roads that may
 * cross: live socket.io events (`job:progress {jobId, progress}`, `job:done {jobId, state, error}`),
 * and polls of `GET /api/jobs/:id` (the fallback while the socket is away, and a slow safety net
 * while it is up, since live events are not replayed after a reconnection). They carry no
 * numbers, so the rules keep the panel from going backwards: the first final state wins and
 * nothing changes a finished job; progress of the same attempt only moves forward.
 */

export const FINAL_STATES = new Set(["succeeded", "failed", "cancelled", "dead"]);

/** Poll every job this often while the socket is away… */
export const POLL_OFFLINE_MS = 2000;
/** …and this long after the last news while it is up, in case a live event was missed. */
export const POLL_SAFETY_MS = 10_000;

/** A job as the panel knows it. `label` says what it is for ("Report · Trip to Lisbon"). */
export function newJob({ id, kind, label, conversationId = null, state = "queued" }) {
	return { id, kind, label, conversationId, state, progress: { current: 0, total: 0, step: "" }, attempts: 0, error: null, summary: null };
}

export const isFinished = job => FINAL_STATES.has(job.state);

function validProgress(p) {
	return p && Number.isFinite(p.current) && Number.isFinite(p.total) && p.current >= 0 && p.total >= 0;
}

/** Applies a progress report; returns whether the job changed. */
export function applyProgress(job, progress) {
	if (isFinished(job) || !validProgress(progress)) return false;
	const known = job.progress;
	// An older report (a poll answered after a newer live event) of the same plan.
	if (progress.total === known.total && progress.current < known.current) return false;
	const step = typeof progress.step === "string" ? progress.step : "";
	const changed = progress.current !== known.current || progress.total !== known.total || step !== known.step || job.state !== "running";
	job.progress = { current: progress.current, total: progress.total, step };
	job.state = "running";
	return changed;
}

/** Applies a final state; the first one wins. Returns whether the job changed. */
export function applyDone(job, { state, error = null }) {
	if (isFinished(job) || !FINAL_STATES.has(state)) return false;
	job.state = state;
	job.error = error ?? null;
	if (state === "succeeded" && job.progress.total > 0) job.progress = { ...job.progress, current: job.progress.total };
	return true;
}

/** Applies what `GET /api/jobs/:id` answered; returns whether the job changed. */
export function applySnapshot(job, record) {
	if (isFinished(job) || !record) return false;
	let changed = false;
	if (Number.isFinite(record.attempts) && record.attempts !== job.attempts) {
		// A new delivery starts its progress afresh.
		if (record.attempts > job.attempts && job.attempts > 0) job.progress = { current: 0, total: 0, step: "" };
		job.attempts = record.attempts;
		changed = true;
	}
	// The kind's summary: `result` itself, or `result.summary` as the API was first drafted.
	if (record.result && typeof record.result === "object") job.summary = record.result.summary ?? record.result;
	if (validProgress(record.progress)) changed = applyProgress(job, record.progress) || changed;
	if (FINAL_STATES.has(record.state)) return applyDone(job, { state: record.state, error: record.error ?? null }) || changed;
	if (record.state === "queued" && job.state !== "queued") {
		// Waiting for its next delivery (a retry after a failure).
		job.state = "queued";
		changed = true;
	}
	return changed;
}

/** How far along the job is, 0..100. */
export function percent(job) {
	if (job.state === "succeeded") return 100;
	const { current, total } = job.progress;
	return total > 0 ? Math.min(100, Math.round((current / total) * 100)) : 0;
}

/** The error's sentence, whatever shape the server gave it. */
export function errorText(error) {
	if (!error) return "";
	if (typeof error === "string") return error;
	return error.message || error.code || error.type || "";
}

/** One line for the user. */
export function statusText(job) {
	switch (job.state) {
		case "queued":
			return job.attempts > 1 ? "Waiting to try again…" : "Waiting to start…";
		case "running":
			return job.progress.step ? `${capitalized(job.progress.step)} (${job.progress.current} of ${job.progress.total})` : "Starting…";
		case "succeeded":
			return "Ready";
		case "cancelled":
			return "Cancelled";
		case "dead":
			return `Failed after several tries${job.error ? `: ${errorText(job.error)}` : ""}`;
		default:
			return `Failed${job.error ? `: ${errorText(job.error)}` : ""}`;
	}
}

function capitalized(text) {
	return text.charAt(0).toUpperCase() + text.slice(1);
}

/** When to poll the job next (ms from now), or null: never (it is finished). */
export function nextPollMs(job, { connected }) {
	if (isFinished(job)) return null;
	return connected ? POLL_SAFETY_MS : POLL_OFFLINE_MS;
}

/** The filename a download offers: the server's (Content-Disposition), else one from the job. */
export function downloadName(contentDisposition, job) {
	const header = contentDisposition ?? "";
	const star = /filename\*\s*=\s*(?:UTF-8|utf-8)''([^;]+)/.exec(header);
	if (star) {
		try {
			return decodeURIComponent(star[1].trim());
		} catch {
			// A malformed encoding: fall through to the plain form.
		}
	}
	const plain = /filename\s*=\s*"([^"]+)"|filename\s*=\s*([^;\s]+)/.exec(header);
	const name = plain?.[1] ?? plain?.[2];
	if (name) return name;
	return job.kind === "export" ? `chatmesh-export-${job.id}` : `${job.kind}-${job.id}.md`;
}
