/**
 * Opaque keyset-pagination cursors: the sort value and id of the last item of a page. A cursor a
 * client altered or made up is a 400, never a 500.
 */
import { BadRequestError } from "./errors";

export interface CursorPosition {
	/** ISO timestamp of the last item's sort column. */
	at: string;
	id: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function encodeCursor(at: Date, id: string): string {
	return Buffer.from(JSON.stringify([at.toISOString(), id])).toString("base64url");
}

export function decodeCursor(cursor: string | undefined): CursorPosition | undefined {
	if (!cursor) return undefined;
	try {
		const [at, id] = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8")) as [unknown, unknown];
		if (typeof at === "string" && !Number.isNaN(Date.parse(at)) && typeof id === "string" && UUID.test(id)) return { at, id };
	} catch {
		// fall through to the 400
	}
	throw new BadRequestError("Invalid cursor", { cursor });
}

/** Cuts a page fetched with limit + 1 rows and makes the next cursor. */
export function pageOf<T>(rows: T[], limit: number, position: (row: T) => { at: Date; id: string }) {
	const items = rows.slice(0, limit);
	const last = items.at(-1);
	const next = rows.length > limit && last ? position(last) : undefined;
	return { items, nextCursor: next ? encodeCursor(next.at, next.id) : null };
}
