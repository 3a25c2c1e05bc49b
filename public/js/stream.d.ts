// Types of stream.js for the TypeScript tests that import it.
export interface ToolState {
	id: string;
	name?: string;
	arguments?: unknown;
	status?: string;
	output?: unknown;
	durationMs?: number;
}

export interface Stream {
	conversationId: string | null;
	generationId: string;
	messageId: string | null;
	lastSeq: number;
	text: string;
	tools: ToolState[];
	status: string;
	error: { code?: string; message?: string } | null;
}

export type Outcome = "applied" | "duplicate" | "gap" | "ended";

export function newStream(init: {
	conversationId: string | null;
	generationId: string;
	messageId?: string | null;
	lastSeq?: number;
	text?: string;
	tools?: ToolState[];
}): Stream;
export function endStream(stream: Stream, status: string | undefined, error?: Stream["error"]): void;
export function applyEvent(stream: Stream, name: string, event: { seq?: number; [field: string]: unknown }): Outcome;
export const NUMBERED_EVENTS: string[];
export const APPLIED: "applied";
export const DUPLICATE: "duplicate";
export const GAP: "gap";
export const ENDED: "ended";
