/**
 * What every value a client sends must satisfy before it reaches an action: bounded nesting (a
 * deeply nested body overflows the stack of whatever serializes it next, NATS's included) and
 * strings PostgreSQL can store (no NUL) that are well-formed UTF-16 (no lone surrogate). The
 * gateway checks HTTP bodies and query strings and socket.io payloads with this, at the edge, so
 * no action has to.
 */
import { Errors } from "moleculer";
import { BadRequestError, ERR_NESTING_TOO_DEEP, ERR_VALIDATION } from "./errors";

/** Deepest accepted nesting of objects and arrays; no chatmesh request needs more than a few. */
export const MAX_INPUT_DEPTH = 64;

// NUL, a high surrogate not followed by a low one, a low surrogate not preceded by a high one.
const BAD_STRING = /\0|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

function badString(field: string, value: string): Errors.ValidationError {
	const what = value.includes("\0") ? "a NUL character" : "an unpaired UTF-16 surrogate";
	const message = `The '${field}' field contains ${what}.`;
	// Moleculer's own validation error shape, so clients handle it like any other invalid field.
	return new Errors.ValidationError(message, ERR_VALIDATION, [{ type: "string", field, message }]);
}

const child = (path: string, key: string | number) => (typeof key === "number" ? `${path}[${key}]` : path ? `${path}.${key}` : key);

/**
 * Throws 400 NESTING_TOO_DEEP past MAX_INPUT_DEPTH, or 422 VALIDATION_ERROR naming the field
 * whose string (or key) holds a NUL or a lone surrogate. `root` names the value itself.
 */
export function assertCleanInput(value: unknown, root: string): void {
	// Iterative, so the check itself cannot overflow the stack it protects.
	const pending: Array<{ value: unknown; path: string; depth: number }> = [{ value, path: "", depth: 0 }];
	for (let next = pending.pop(); next; next = pending.pop()) {
		const { value: v, path, depth } = next;
		if (typeof v === "string") {
			if (BAD_STRING.test(v)) throw badString(path || root, v);
			continue;
		}
		if (!v || typeof v !== "object" || ArrayBuffer.isView(v) || v instanceof ArrayBuffer) continue;
		if (depth >= MAX_INPUT_DEPTH)
			throw new BadRequestError(`Input is nested deeper than ${MAX_INPUT_DEPTH} levels`, { maxDepth: MAX_INPUT_DEPTH }, ERR_NESTING_TOO_DEEP);
		if (Array.isArray(v)) {
			for (let i = 0; i < v.length; i++) pending.push({ value: v[i], path: child(path, i), depth: depth + 1 });
			continue;
		}
		for (const [key, item] of Object.entries(v)) {
			const field = child(path, key);
			if (BAD_STRING.test(key)) throw badString(field, key);
			pending.push({ value: item, path: field, depth: depth + 1 });
		}
	}
}
