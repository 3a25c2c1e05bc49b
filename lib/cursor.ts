/**
 * Opaque keyset-pagination cursors: the sort value and id of the last item of a page. Only the
 * exact text encodeCursor makes is accepted: a cursor a client altered or made up is a 400
 * INVALID_CURSOR, never a 500 (a loose date such as "1" or "+275760-…" would reach the query).
 */
import { BadRequestError, ERR_INVALID_CURSOR } from "./errors";

export interface CursorPosition {
	/** ISO timestamp of the last item's sort column. */
	at: string;
	id: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// Date.prototype.toISOString for years 0001-9999 (PostgreSQL has no year 0; wider years are not ours).
const ISO_TIMESTAMP = /^(?!0000)\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const BASE64URL = /^[A-Za-z0-9_-]+$/;

export function encodeCursor(at: Date, id: string): string {
	return Buffer.from(JSON.stringify([at.toISOString(), id])).toString("base64url");
}

export function decodeCursor(cursor: string | undefined): CursorPosition | undefined {
	if (!cursor) return undefined;
	const position = parseCursor(cursor);
	if (!position) throw new BadRequestError("Invalid cursor", { field: "cursor" }, ERR_INVALID_CURSOR);
	return position;
}

function parseCursor(cursor: string): CursorPosition | undefined {
	if (!BASE64URL.test(cursor)) return undefined;
	let decoded: unknown;
	try {
		decoded = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
	} catch {
		return undefined;
	}
	if (!Array.isArray(decoded) || decoded.length !== 2) return undefined;
	const [at, id] = decoded as unknown[];
	if (typeof at !== "string" || typeof id !== "string" || !ISO_TIMESTAMP.test(at) || !UUID.test(id)) return undefined;
	// A real instant (no 2026-02-31), and the very bytes encodeCursor would make for it.
	const time = new Date(at);
	if (Number.isNaN(time.getTime()) || time.toISOString() !== at || encodeCursor(time, id) !== cursor) return undefined;
	return { at, id };
}

/** Cuts a page fetched with limit + 1 rows and makes the next cursor. */
export function pageOf<T>(rows: T[], limit: number, position: (row: T) => { at: Date; id: string }) {
	const items = rows.slice(0, limit);
	const last = items.at(-1);
	const next = rows.length > limit && last ? position(last) : undefined;
	return { items, nextCursor: next ? encodeCursor(next.at, next.id) : null };
}
