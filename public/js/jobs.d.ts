// Types of jobs.js for the TypeScript tests that import it.
export interface PanelProgress {
	current: number;
	total: number;
	step: string;
}

export type JobError = string | { code?: string; type?: string; message?: string } | null;

export interface PanelJob {
	id: string;
	kind: string;
	label: string;
	conversationId: string | null;
	state: string;
	progress: PanelProgress;
	attempts: number;
	error: JobError;
	summary: Record<string, unknown> | null;
}

export interface JobSnapshot {
	state?: string;
	progress?: Partial<PanelProgress> | null;
	attempts?: number;
	error?: JobError;
	result?: (Record<string, unknown> & { summary?: Record<string, unknown> }) | null;
}

export const FINAL_STATES: Set<string>;
export const POLL_OFFLINE_MS: number;
export const POLL_SAFETY_MS: number;
export function newJob(init: { id: string; kind: string; label: string; conversationId?: string | null; state?: string }): PanelJob;
export function isFinished(job: PanelJob): boolean;
export function applyProgress(job: PanelJob, progress: Partial<PanelProgress> | null | undefined): boolean;
export function applyDone(job: PanelJob, done: { state: string; error?: JobError }): boolean;
export function applySnapshot(job: PanelJob, record: JobSnapshot | null | undefined): boolean;
export function percent(job: PanelJob): number;
export function errorText(error: JobError | undefined): string;
export function statusText(job: PanelJob): string;
export function nextPollMs(job: PanelJob, opts: { connected: boolean }): number | null;
export function downloadName(contentDisposition: string | null | undefined, job: PanelJob): string;
