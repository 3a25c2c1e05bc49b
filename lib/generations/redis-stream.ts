/**
 * How the Redis generation log lays a generation out, shared by its writer and its reader: one
 * stream per generation whose entry IDs are `0-<seq>`, each entry one field holding the event
 * without its seq as JSON, and the meta as JSON beside it.
 */
import type { GenerationEvent, GenerationEventInput } from "../chat-protocol";
import type { GenerationLogLogger } from "./log";

/** The one field of each stream entry: the event without its seq, as JSON. */
export const FIELD = "e";

export const streamId = (seq: number): string => `0-${seq}`;
export const seqOf = (id: string): number => Number(id.slice(id.indexOf("-") + 1));
export const asError = (err: unknown): Error => (err instanceof Error ? err : new Error(String(err)));
export const noop = (): void => {};

export type Entry = [id: string, fields: string[]];
export type PipelineResults = Array<[error: Error | null, result: unknown]> | null;

export interface Keys {
	stream: string;
	meta: string;
}

export function keysOf(keyPrefix: string, generationId: string): Keys {
	const stream = `${keyPrefix}:gen:${generationId}`;
	return { stream, meta: `${stream}:meta` };
}

export function decode([id, fields]: Entry): GenerationEvent {
	for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === FIELD) return { seq: seqOf(id), ...(JSON.parse(fields[i + 1]) as GenerationEventInput) };
	throw new Error(`generation log entry ${id} has no "${FIELD}" field`);
}

/** The entry's event, or undefined (logged) when it cannot be read: one bad entry must not stop a stream. */
export function decodeOrSkip(entry: Entry, generationId: string, logger?: GenerationLogLogger): GenerationEvent | undefined {
	try {
		return decode(entry);
	} catch (err) {
		logger?.error("Generation log: skipping an unreadable entry", { generationId, err });
		return undefined;
	}
}

/** The replies of a pipeline, or its first error. */
export function repliesOf(results: PipelineResults, accept?: (err: Error) => boolean): unknown[] {
	if (!results) throw new Error("Redis pipeline was discarded");
	return results.map(([err, result]) => {
		if (err && !accept?.(err)) throw err;
		return result;
	});
}
