import crypto from "node:crypto";
import { SignJWT } from "jose";
import type pg from "pg";
import { beforeAll, describe, expect, it } from "vitest";
import { withChatNode } from "../helpers/fixtures";
import { TEST_JWT_SECRET, type TestDatabase, queryDb } from "../helpers/infra";
import { signUp, type ApiClient, type Session } from "../helpers/http";

// Identity end to end over HTTP: gateway, user and the real PostgreSQL, Redis and NATS.
let db: TestDatabase;
let api: ApiClient;

withChatNode({
	label: "identity",
	simulator: false,
	nats: true,
	env: { SERVICES: "gateway,user", BODY_LIMIT_BYTES: "4096" },
	started: f => {
		({ db, api } = f);
	}
});

const sql = <T extends pg.QueryResultRow>(text: string, params: unknown[] = []) => queryDb<T>(db.url, text, params);

const userCount = async () => Number((await sql<{ n: string }>("SELECT count(*) AS n FROM users"))[0].n);

describe("register", () => {
	it("creates an account and signs it in", async () => {
		const email = `New.User-${crypto.randomUUID()}@Example.test`;
		const res = await api.post<{ user: { id: string; email: string; roles: string[] }; accessToken: string; refreshToken: string; tokenType: string }>(
			"/api/auth/register",
			{ body: { email, password: "a long enough password" } }
		);
		expect(res.status).toBe(201);
		expect(res.headers.get("location")).toBe("/api/me");
		expect(res.body.user.email).toBe(email.toLowerCase());
		expect(res.body.user.roles).toEqual(["user"]);
		expect(res.body.tokenType).toBe("Bearer");
		expect(res.body.accessToken.split(".")).toHaveLength(3);
		expect(res.body.refreshToken).toMatch(/^rt_/);
		const [row] = await sql<{ password_hash: string }>("SELECT password_hash FROM users WHERE id = $1", [res.body.user.id]);
		expect(row.password_hash).toMatch(/^\$argon2id\$/);
	});

	it("refuses a taken email (any case) with 409 EMAIL_TAKEN and stores nothing", async () => {
		const first = await signUp(api, "dup");
		const before = await userCount();
		const res = await api.post("/api/auth/register", { body: { email: first.email.toUpperCase(), password: "another long password" } });
		expect(res.status).toBe(409);
		expect(res.body).toMatchObject({ type: "EMAIL_TAKEN", code: 409 });
		expect(await userCount()).toBe(before);
	});

	it("states the password rules when a password breaks them", async () => {
		const before = await userCount();
		const res = await api.post<{ type: string; data: { rules: string[]; broken: string[] } }>("/api/auth/register", {
			body: { email: `short-${crypto.randomUUID()}@example.test`, password: "short" }
		});
		expect(res.status).toBe(400);
		expect(res.body.type).toBe("WEAK_PASSWORD");
		expect(res.body.data.rules).toContain("at least 10 characters");
		expect(res.body.data.broken).toEqual(["at least 10 characters"]);
		expect(await userCount()).toBe(before);
	});

	it("validates the email", async () => {
		const res = await api.post("/api/auth/register", { body: { email: "not-an-email", password: "a long enough password" } });
		expect(res.status).toBe(422);
		expect(res.body).toMatchObject({ type: "VALIDATION_ERROR" });
	});
});

describe("login", () => {
	let user: Session;
	beforeAll(async () => {
		user = await signUp(api, "login");
	});

	it("signs in with the right password", async () => {
		const res = await api.post<{ user: { id: string }; accessToken: string }>("/api/auth/login", {
			body: { email: user.email, password: user.password }
		});
		expect(res.status).toBe(200);
		expect(res.body.user.id).toBe(user.userId);
		const me = await api.get<{ id: string; email: string }>("/api/me", { token: res.body.accessToken });
		expect(me.status).toBe(200);
		expect(me.body).toMatchObject({ id: user.userId, email: user.email });
	});

	it("answers a wrong password and an unknown email alike: 401 INVALID_CREDENTIALS", async () => {
		const wrong = await api.post("/api/auth/login", { body: { email: user.email, password: "not the password" } });
		const unknown = await api.post("/api/auth/login", { body: { email: `nobody-${crypto.randomUUID()}@example.test`, password: "whatever long" } });
		for (const res of [wrong, unknown]) {
			expect(res.status).toBe(401);
			expect(res.body).toMatchObject({ type: "INVALID_CREDENTIALS", message: "Email or password is wrong" });
		}
	});

	it("blocks an email after five failed sign-ins from one address, with Retry-After, and only that email", async () => {
		const target = await signUp(api, "guessed");
		for (let i = 0; i < 5; i++) {
			const res = await api.post("/api/auth/login", { body: { email: target.email, password: `guess number ${i}` } });
			expect(res.status).toBe(401);
		}
		// Now even the right password waits: the block holds the email for this address.
		const blocked = await api.post("/api/auth/login", { body: { email: target.email, password: target.password } });
		expect(blocked.status).toBe(429);
		expect(blocked.body).toMatchObject({ type: "RATE_LIMITED", data: { scope: "login" } });
		expect(Number(blocked.headers.get("retry-after"))).toBeGreaterThanOrEqual(60);
		// Another account from the same address signs in as usual.
		const other = await signUp(api, "unguessed");
		expect((await api.post("/api/auth/login", { body: { email: other.email, password: other.password } })).status).toBe(200);
	});

	it("requires a caller for /api/me", async () => {
		const res = await api.get("/api/me");
		expect(res.status).toBe(401);
		expect(res.body).toMatchObject({ type: "UNAUTHORIZED" });
	});
});

describe("refresh tokens", () => {
	it("rotates on every use, and a reused token revokes the whole family", async () => {
		const user = await signUp(api, "rotate");
		const first = await api.post<{ accessToken: string; refreshToken: string }>("/api/auth/refresh", { body: { refreshToken: user.refreshToken } });
		expect(first.status).toBe(200);
		expect(first.body.refreshToken).not.toBe(user.refreshToken);
		expect((await api.get("/api/me", { token: first.body.accessToken })).status).toBe(200);

		const second = await api.post<{ accessToken: string; refreshToken: string }>("/api/auth/refresh", { body: { refreshToken: first.body.refreshToken } });
		expect(second.status).toBe(200);

		// The first refresh token comes back: someone holds a copy.
		const reuse = await api.post("/api/auth/refresh", { body: { refreshToken: user.refreshToken } });
		expect(reuse.status).toBe(401);
		expect(reuse.body).toMatchObject({ type: "TOKEN_REVOKED" });

		// Every token of the family is dead: the newest refresh token and the access tokens.
		const newest = await api.post("/api/auth/refresh", { body: { refreshToken: second.body.refreshToken } });
		expect(newest.status).toBe(401);
		expect(newest.body).toMatchObject({ type: "TOKEN_REVOKED" });
		for (const token of [user.accessToken, first.body.accessToken, second.body.accessToken]) {
			const me = await api.get("/api/me", { token });
			expect(me.status).toBe(401);
			expect(me.body).toMatchObject({ type: "TOKEN_REVOKED" });
		}

		// Other sessions of the same user are untouched.
		const other = await api.post<{ accessToken: string }>("/api/auth/login", { body: { email: user.email, password: user.password } });
		expect((await api.get("/api/me", { token: other.body.accessToken })).status).toBe(200);
	});

	it("lets only one of two concurrent refreshes with the same token through", async () => {
		const user = await signUp(api, "race");
		const results = await Promise.all([1, 2].map(() => api.post("/api/auth/refresh", { body: { refreshToken: user.refreshToken } })));
		expect(results.map(r => r.status).sort()).toEqual([200, 401]);
	});

	it("refuses an unknown refresh token", async () => {
		const res = await api.post("/api/auth/refresh", { body: { refreshToken: "rt_made-up" } });
		expect(res.status).toBe(401);
		expect(res.body).toMatchObject({ type: "INVALID_TOKEN" });
	});
});

describe("logout", () => {
	it("revokes the session: its refresh token and access token stop working", async () => {
		const user = await signUp(api, "logout");
		expect((await api.get("/api/me", { token: user.accessToken })).status).toBe(200); // now cached
		const out = await api.post("/api/auth/logout", { body: { refreshToken: user.refreshToken } });
		expect(out.status).toBe(204);
		const refresh = await api.post("/api/auth/refresh", { body: { refreshToken: user.refreshToken } });
		expect(refresh.status).toBe(401);
		const me = await api.get("/api/me", { token: user.accessToken });
		expect(me.status).toBe(401);
		expect(me.body).toMatchObject({ type: "TOKEN_REVOKED" });
	});
});

describe("access tokens that must be refused", () => {
	let user: Session;
	const key = new TextEncoder().encode(TEST_JWT_SECRET);
	let sessionId: string;

	beforeAll(async () => {
		user = await signUp(api, "forge");
		sessionId = JSON.parse(Buffer.from(user.accessToken.split(".")[1], "base64url").toString()).sid as string;
	});

	function claims() {
		return new SignJWT({ sid: sessionId, roles: ["user", "admin"] }).setProtectedHeader({ alg: "HS256" }).setSubject(user.userId);
	}
	const now = () => Math.floor(Date.now() / 1000);
	const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");

	const cases: Array<[string, () => Promise<string>, string]> = [
		[
			"expired",
			() =>
				claims()
					.setIssuer("chatmesh")
					.setAudience("chatmesh-api")
					.setIssuedAt(now() - 3600)
					.setExpirationTime(now() - 60)
					.sign(key),
			"TOKEN_EXPIRED"
		],
		[
			"tampered (payload changed after signing)",
			async () => {
				const [h, , s] = user.accessToken.split(".");
				const payload = JSON.parse(Buffer.from(user.accessToken.split(".")[1], "base64url").toString());
				return `${h}.${b64({ ...payload, roles: ["user", "admin"] })}.${s}`;
			},
			"INVALID_TOKEN"
		],
		[
			"alg: none",
			async () => {
				const payload = JSON.parse(Buffer.from(user.accessToken.split(".")[1], "base64url").toString());
				return `${b64({ alg: "none", typ: "JWT" })}.${b64(payload)}.`;
			},
			"INVALID_TOKEN"
		],
		[
			"wrong issuer",
			() =>
				claims()
					.setIssuer("someone-else")
					.setAudience("chatmesh-api")
					.setExpirationTime(now() + 600)
					.sign(key),
			"INVALID_TOKEN"
		],
		[
			"wrong audience",
			() =>
				claims()
					.setIssuer("chatmesh")
					.setAudience("other-api")
					.setExpirationTime(now() + 600)
					.sign(key),
			"INVALID_TOKEN"
		],
		[
			"signed with another key",
			() =>
				claims()
					.setIssuer("chatmesh")
					.setAudience("chatmesh-api")
					.setExpirationTime(now() + 600)
					.sign(crypto.randomBytes(48)),
			"INVALID_TOKEN"
		],
		["garbage", async () => "not.a.jwt", "INVALID_TOKEN"]
	];

	it.each(cases)("%s → 401", async (_name, forge, type) => {
		const res = await api.get("/api/me", { token: await forge() });
		expect(res.status).toBe(401);
		expect(res.body).toMatchObject({ code: 401, type });
	});

	it("a well-formed token from the same secret is accepted (the forgeries above are refused for their flaw alone)", async () => {
		const token = await claims()
			.setIssuer("chatmesh")
			.setAudience("chatmesh-api")
			.setExpirationTime(now() + 600)
			.sign(key);
		expect((await api.get("/api/me", { token })).status).toBe(200);
	});

	it("a non-Bearer Authorization header is refused", async () => {
		const res = await api.get("/api/me", { headers: { authorization: `Basic ${Buffer.from("a:b").toString("base64")}` } });
		expect(res.status).toBe(401);
		expect(res.body).toMatchObject({ type: "INVALID_TOKEN" });
	});
});

describe("API keys", () => {
	it("shows the secret once, authenticates with it, and stops it at once when revoked", async () => {
		const user = await signUp(api, "keys");
		const created = await api.post<{ id: string; key: string; prefix: string; name: string }>("/api/keys", {
			token: user.accessToken,
			body: { name: "laptop" }
		});
		expect(created.status).toBe(201);
		expect(created.body.key).toMatch(/^cm_/);
		expect(created.body.key.startsWith(created.body.prefix)).toBe(true);

		const list = await api.get<{ items: Array<Record<string, unknown>> }>("/api/keys", { token: user.accessToken });
		expect(list.body.items).toHaveLength(1);
		expect(list.body.items[0]).toMatchObject({ id: created.body.id, name: "laptop", prefix: created.body.prefix, revokedAt: null });
		expect(JSON.stringify(list.body)).not.toContain(created.body.key);
		const [stored] = await sql<{ key_hash: string }>("SELECT key_hash FROM api_keys WHERE id = $1", [created.body.id]);
		expect(stored.key_hash).not.toContain(created.body.key);

		const me = await api.get<{ id: string }>("/api/me", { token: created.body.key });
		expect(me.status).toBe(200);
		expect(me.body.id).toBe(user.userId);

		expect((await api.delete(`/api/keys/${created.body.id}`, { token: user.accessToken })).status).toBe(204);
		const after = await api.get("/api/me", { token: created.body.key });
		expect(after.status).toBe(401);
		expect(after.body).toMatchObject({ type: "INVALID_TOKEN" });
	});

	it("validates key names and ids", async () => {
		const user = await signUp(api, "keys-bad");
		expect((await api.post("/api/keys", { token: user.accessToken, body: { name: "" } })).status).toBe(422);
		expect((await api.delete("/api/keys/not-a-uuid", { token: user.accessToken })).status).toBe(422);
		expect((await api.get<{ items: unknown[] }>("/api/keys", { token: user.accessToken })).body.items).toHaveLength(0);
	});
});

describe("admin", () => {
	it("lists users for admins only", async () => {
		const user = await signUp(api, "plain");
		const refused = await api.get("/api/admin/users", { token: user.accessToken });
		expect(refused.status).toBe(403);
		expect(refused.body).toMatchObject({ type: "FORBIDDEN" });

		await sql("UPDATE users SET roles = ARRAY['user','admin'] WHERE id = $1", [user.userId]);
		const login = await api.post<{ accessToken: string }>("/api/auth/login", { body: { email: user.email, password: user.password } });
		const page = await api.get<{ items: Array<{ id: string }>; nextCursor: string | null }>("/api/admin/users?limit=2", {
			token: login.body.accessToken
		});
		expect(page.status).toBe(200);
		expect(page.body.items).toHaveLength(2);
		expect(page.body.nextCursor).toEqual(expect.any(String));
		const next = await api.get<{ items: Array<{ id: string }> }>(`/api/admin/users?limit=2&cursor=${page.body.nextCursor}`, {
			token: login.body.accessToken
		});
		expect(next.body.items.map(i => i.id)).not.toContain(page.body.items[0].id);
		const bad = await api.get("/api/admin/users?cursor=garbage", { token: login.body.accessToken });
		expect(bad.status).toBe(400);
	});
});

describe("request bodies", () => {
	it("answers malformed JSON with 400 INVALID_JSON", async () => {
		const res = await api.post("/api/auth/login", { rawBody: '{"email": "a@b.c", ' });
		expect(res.status).toBe(400);
		expect(res.body).toMatchObject({ type: "INVALID_JSON" });
	});

	it("answers a body over the configured size with 413 and stores nothing", async () => {
		const before = await userCount();
		const res = await api.post("/api/auth/register", {
			body: { email: `big-${crypto.randomUUID()}@example.test`, password: "long enough password", pad: "x".repeat(8192) }
		});
		expect(res.status).toBe(413);
		expect(res.body).toMatchObject({ type: "PAYLOAD_TOO_LARGE" });
		expect(await userCount()).toBe(before);
	});
});
