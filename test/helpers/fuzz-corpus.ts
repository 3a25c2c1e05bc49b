/**
 * A seeded corpus of malformed input for the gateway: for every HTTP alias, bad ids, queries (bad
 * cursors among them), raw bodies (bad JSON, deep nesting, huge), content encodings, random
 * objects of wrong types, NUL and lone surrogates, and bad credentials; for every socket.io event,
 * payloads of the same kinds. The same seed gives the same corpus, in the same order.
 */
import { gzipSync } from "node:zlib";

export const SEED = 0x5eed_c4a7;

/** "METHOD /full/path" of one gateway alias, and whether its errors are in OpenAI's shape. */
export interface Alias {
	method: string;
	path: string;
	openai: boolean;
}

/** mulberry32: small, seedable, good enough to pick cases. */
function prng(seed: number): () => number {
	let a = seed >>> 0;
	return () => {
		a = (a + 0x6d2b79f5) >>> 0;
		let t = a;
		t = Math.imul(t ^ (t >>> 15), t | 1);
		t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
		return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
	};
}
const rand = prng(SEED);
const pick = <T>(items: readonly T[]): T => items[Math.floor(rand() * items.length)];
/** A uuid from the seeded generator, so the corpus is the same on every run. */
const seededUuid = () => {
	const hex = Array.from({ length: 32 }, () => Math.floor(rand() * 16).toString(16)).join("");
	return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
};

export const deepArray = (depth: number) => `${"[".repeat(depth)}1${"]".repeat(depth)}`;
export const deepObject = (depth: number) => `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`;
export const nested = (depth: number): unknown => (depth === 0 ? "leaf" : { a: nested(depth - 1) });
const b64 = (value: unknown) => Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");

const BAD_CURSORS = [
	"1",
	"garbage!",
	b64(["1", seededUuid()]),
	b64(["March 7", seededUuid()]),
	b64(["+275760-09-13T00:00:00.000Z", seededUuid()]),
	b64(["2026-02-31T00:00:00.000Z", seededUuid()]),
	b64(["0000-01-01T00:00:00.000Z", seededUuid()]),
	b64(["2026-01-01T00:00:00.000Z", "not-a-uuid"]),
	b64(["2026-01-01T00:00:00Z", seededUuid()]),
	`${b64(["2026-01-01T00:00:00.000Z", seededUuid()])}=`,
	b64("["),
	b64({ at: "2026-01-01T00:00:00.000Z" }),
	b64([1, 2, 3])
];

const NASTY_VALUES: readonly unknown[] = [
	null,
	true,
	0,
	-1,
	1.5,
	1e308,
	2 ** 53 + 1,
	"",
	" ",
	"\0",
	"a\u0000b",
	"\ud800",
	"x\udc00y",
	"\udbff\udfff",
	"x".repeat(300),
	"é".repeat(40_000),
	[],
	[1, "a", null],
	{},
	{ $ne: null },
	"' OR 1=1 --",
	"%00",
	"../../etc/passwd",
	"2026-13-45",
	"not-a-uuid",
	nested(70),
	nested(10),
	...BAD_CURSORS.slice(0, 4)
];

const FIELDS = [
	"title",
	"content",
	"model",
	"email",
	"password",
	"refreshToken",
	"name",
	"roles",
	"tokensLimit",
	"period",
	"conversationId",
	"generationId",
	"after",
	"cursor",
	"limit",
	"messages",
	"stream",
	"conversation_id",
	"token",
	"max_tokens",
	"a\u0000b",
	"\ud800"
];

function randomObject(): Record<string, unknown> {
	const body: Record<string, unknown> = {};
	const n = 1 + Math.floor(rand() * 4);
	for (let i = 0; i < n; i++) body[pick(FIELDS)] = pick(NASTY_VALUES);
	return body;
}

export interface HttpCase {
	method: string;
	path: string;
	headers: Record<string, string>;
	body?: string | Buffer;
	/** Routes whose errors are in OpenAI's shape. */
	openai: boolean;
}

const RAW_BODIES = [
	"",
	"{",
	"}",
	"null",
	"[]",
	"[1,2]",
	'"text"',
	"123",
	'{"a":}',
	"{'single': 1}",
	"\u0000",
	deepArray(6000),
	deepObject(6000),
	deepArray(65),
	deepObject(64),
	JSON.stringify({ content: "x".repeat(1_100_000) })
];

const QUERIES = [
	...BAD_CURSORS.map(c => `?cursor=${encodeURIComponent(c)}`),
	"?cursor=%00",
	"?cursor=%ED%A0%80",
	"?limit=-1",
	"?limit=abc",
	"?limit=1e9",
	"?limit=%00",
	"?after=x",
	"?a[b][c][d][e][f][g][h]=1",
	"?cursor[]=1&cursor[]=2",
	"?cursor[a]=1",
	`?cursor=${"A".repeat(5000)}`
];

const ID_VARIANTS = ["not-a-uuid", "%00", "%ED%A0%80", "x".repeat(3000), "1", "%2e%2e", "%F0%9F%98%80", "00000000-0000-0000-0000-00000000000g"];

const ENCODINGS: Array<{ headers: Record<string, string>; body: string | Buffer }> = [
	{ headers: { "content-encoding": "gzip" }, body: '{"title":"plain"}' },
	{ headers: { "content-encoding": "deflate" }, body: '{"title":"plain"}' },
	{ headers: { "content-encoding": "br" }, body: '{"title":"plain"}' },
	{ headers: { "content-encoding": "x-unknown" }, body: '{"title":"plain"}' },
	{ headers: { "content-encoding": "gzip, identity" }, body: '{"title":"plain"}' },
	{ headers: { "content-encoding": "gzip" }, body: gzipSync('{"title":"zipped"}') },
	{ headers: { "content-type": "application/json; charset=utf-16" }, body: '{"title":"x"}' },
	{ headers: { "content-type": "application/json; charset=klingon" }, body: '{"title":"x"}' },
	{ headers: { "content-type": "text/plain" }, body: '{"title":"x"}' },
	{ headers: { "content-type": "application/x-www-form-urlencoded" }, body: "title=x&content=%00" }
];

const HEADER_VARIANTS: Array<Record<string, string>> = [
	{ "last-event-id": "-1" },
	{ "last-event-id": "1e400" },
	{ "last-event-id": "abc" },
	{ "last-event-id": "9".repeat(40) },
	{ accept: "text/event-stream" },
	{ "x-request-id": "r".repeat(4000) },
	{ "x-forwarded-for": "not-an-address, ::ffff:999.1.1.1" }
];

/** Every alias with every kind of malformed request; `idFor` names a real resource for a `:id` path. */
export function httpCorpus(aliases: Alias[], token: string, idFor: (path: string) => string): HttpCase[] {
	const cases: HttpCase[] = [];
	const auth = { authorization: `Bearer ${token}` };
	const json = { ...auth, "content-type": "application/json" };
	for (const { method, path, openai } of aliases) {
		const withId = (id: string) => path.replace(":id", id);
		const base = withId(idFor(path));
		const add = (p: string, headers: Record<string, string>, body?: string | Buffer) => cases.push({ method, path: p, headers, body, openai });
		for (const id of [...ID_VARIANTS, seededUuid()]) add(withId(id), json, "{}");
		for (const query of QUERIES) add(`${base}${query}`, auth);
		for (const raw of RAW_BODIES) add(base, json, raw);
		for (const { headers, body } of ENCODINGS) add(base, { ...json, ...headers }, body);
		for (let i = 0; i < 24; i++) add(base, json, JSON.stringify(rand() < 0.85 ? randomObject() : [randomObject()]));
		add(base, { authorization: "Basic abc" });
		add(base, { authorization: "Bearer a b" });
		add(base, { authorization: `Bearer ${"x".repeat(5000)}` });
		add(base, {});
		for (const headers of HEADER_VARIANTS) add(base, { ...json, ...headers }, JSON.stringify(randomObject()));
		add(base, { ...json, origin: "https://elsewhere.example", "access-control-request-method": method });
	}
	return cases;
}

export const EVENT_FIELDS: Record<string, string[]> = {
	"chat:send": ["conversationId", "content", "model"],
	"generation:subscribe": ["generationId", "after"],
	"generation:cancel": ["generationId"],
	"auth:refresh": ["token"]
};

export function socketCorpus(): Array<{ event: string; args: unknown[] }> {
	const cases: Array<{ event: string; args: unknown[] }> = [];
	for (const [event, fields] of Object.entries(EVENT_FIELDS)) {
		for (const payload of [undefined, null, 1, "text", [], [{}], true, nested(1500), nested(65), nested(63), {}, Buffer.from("binary")])
			cases.push({ event, args: [payload] });
		cases.push({ event, args: [{}, "second", { third: "\0" }] });
		cases.push({ event, args: [{ [fields[0]]: "x" }, "second"] });
		cases.push({ event, args: [{ [fields[0]]: "x" }, 42, { third: true }] });
		cases.push({ event, args: [] });
		for (let i = 0; i < 40; i++) {
			const payload: Record<string, unknown> = {};
			for (const field of fields) if (rand() < 0.8) payload[field] = pick(NASTY_VALUES);
			if (rand() < 0.2) payload[pick(FIELDS)] = pick(NASTY_VALUES);
			cases.push({ event, args: [payload] });
		}
	}
	return cases;
}
