import type { Socket } from "socket.io-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openSocket } from "../helpers/chat";
import { startGatewayPair, type GatewayPair, type PairedGateway } from "../helpers/gateway-pair";
import { signUp, type Session } from "../helpers/http";
import { queryDb } from "../helpers/infra";
import { waitUntil } from "../helpers/processes";

// Credentials stop working on every gateway at once: two gateway processes (each with the user
// and conversation services) and an llm process over the real NATS, Redis and PostgreSQL. Each
// revocation goes through gateway 1; the sockets that must follow it are open on gateway 2.
const REVOKED_WITHIN_MS = 5000;
let pair: GatewayPair;
let gw1: PairedGateway;
let gw2: PairedGateway;

beforeAll(async () => {
	pair = await startGatewayPair("revocation", { RATE_LIMITS: JSON.stringify({ perIp: { auth: { points: 1000, durationS: 60 } } }) });
	pair.sim.configure({ outputTokens: 3, tokenIntervalMs: 1 });
	({ gw1, gw2 } = pair);
}, 90_000);

afterAll(async () => {
	await pair?.stop();
});

/** What the server told a socket before closing it, and whether it closed. */
function watchRevocation(socket: Socket) {
	const seen: { code?: string; disconnect?: string } = {};
	socket.once("auth:revoked", (payload: { code: string }) => (seen.code = payload.code));
	socket.once("disconnect", reason => (seen.disconnect = reason));
	return {
		seen,
		/** Waits until the socket was told and closed by the server. */
		async closed() {
			await waitUntil(async () => seen.code !== undefined && seen.disconnect !== undefined, REVOKED_WITHIN_MS, 20);
			return seen;
		}
	};
}

type SendAck = { generationId?: string; error?: { code: string } };

async function chatSend(socket: Socket): Promise<SendAck | "no answer"> {
	try {
		return (await socket.timeout(3000).emitWithAck("chat:send", { content: "hello" })) as SendAck;
	} catch {
		return "no answer"; // the socket closed before acknowledging
	}
}

/** Sends chat:send until the socket is closed; counts what was accepted. */
async function sendUntilClosed(socket: Socket): Promise<{ accepted: number; refused: string[] }> {
	const result = { accepted: 0, refused: [] as string[] };
	for (let i = 0; i < 10 && socket.connected; i++) {
		const ack = await chatSend(socket);
		if (ack !== "no answer" && ack.generationId) result.accepted += 1;
		else result.refused.push(ack === "no answer" ? ack : (ack.error?.code ?? "?"));
	}
	return result;
}

async function admin(): Promise<Session> {
	const user = await signUp(gw1.api, "admin");
	await queryDb(pair.db.url, "UPDATE users SET roles = ARRAY['user','admin'] WHERE id = $1", [user.userId]);
	const login = await gw1.api.post<{ accessToken: string; refreshToken: string }>("/api/auth/login", { body: { email: user.email, password: user.password } });
	return { ...user, accessToken: login.body.accessToken, refreshToken: login.body.refreshToken };
}

const sessionOf = (token: string) => JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString()).sid as string;

/**
 * The shared scenario: an idle socket (only the broadcast can close it) and a sending socket on
 * gateway 2; the revocation answers on gateway 1; then the sender keeps sending.
 */
async function afterRevocation(token: string, revoke: () => Promise<number>) {
	const idle = await gw2.socket(token);
	const sender = await gw2.socket(token);
	const idleWatch = watchRevocation(idle);
	const senderWatch = watchRevocation(sender);
	const before = await chatSend(sender);
	expect(before).toMatchObject({ generationId: expect.any(String) });
	expect(await revoke()).toBeLessThan(300);
	const sent = await sendUntilClosed(sender);
	const idleSeen = await idleWatch.closed();
	const senderSeen = await senderWatch.closed();
	return { sent, idleSeen, senderSeen };
}

function report(what: string, figures: { sent: { accepted: number; refused: string[] }; idleSeen: { code?: string } }) {
	console.log(
		`${what}: accepted after revocation: ${figures.sent.accepted}; refused: ${figures.sent.refused.join(",")}; idle socket told ${figures.idleSeen.code}`
	);
}

describe("revocations reach open sockets on every gateway", () => {
	it("logout closes that session's sockets on the other gateway, and only that session's", async () => {
		const user = await signUp(gw1.api, "logout");
		const other = await gw1.api.post<{ accessToken: string }>("/api/auth/login", { body: { email: user.email, password: user.password } });
		const otherSession = await gw2.socket(other.body.accessToken);

		const figures = await afterRevocation(
			user.accessToken,
			async () => (await gw1.api.post("/api/auth/logout", { body: { refreshToken: user.refreshToken } })).status
		);
		report("logout", figures);
		expect(figures.sent.accepted).toBe(0);
		expect(figures.idleSeen).toEqual({ code: "TOKEN_REVOKED", disconnect: "io server disconnect" });
		expect(figures.senderSeen.code).toBe("TOKEN_REVOKED");

		const http = await gw2.api.get("/api/me", { token: user.accessToken });
		expect(http.status).toBe(401);
		expect(http.body).toMatchObject({ type: "TOKEN_REVOKED" });
		// The user's other sign-in is untouched.
		expect(otherSession.connected).toBe(true);
		expect(await otherSession.timeout(3000).emitWithAck("whoami", {})).toMatchObject({ user: { id: user.userId } });
	});

	it("an API key revoked on gateway 1 closes the sockets on that key on gateway 2, and only those", async () => {
		const user = await signUp(gw1.api, "keyrevoke");
		const key = await gw1.api.post<{ id: string; key: string }>("/api/keys", { token: user.accessToken, body: { name: "revoked" } });
		const kept = await gw1.api.post<{ key: string }>("/api/keys", { token: user.accessToken, body: { name: "kept" } });
		const keptSocket = await gw2.socket(kept.body.key);

		const figures = await afterRevocation(key.body.key, async () => (await gw1.api.delete(`/api/keys/${key.body.id}`, { token: user.accessToken })).status);
		report("API key revoke", figures);
		expect(figures.sent.accepted).toBe(0);
		expect(figures.idleSeen).toEqual({ code: "TOKEN_REVOKED", disconnect: "io server disconnect" });

		const http = await gw2.api.get("/api/me", { token: key.body.key });
		expect(http.status).toBe(401);
		expect(http.body).toMatchObject({ type: "INVALID_TOKEN" });
		expect(keptSocket.connected).toBe(true);
		expect((await gw2.api.get("/api/me", { token: kept.body.key })).status).toBe(200);
	});

	it("a demoted admin loses admin routes at once with the old token, over HTTP and on an open socket", async () => {
		const boss = await admin();
		const demoted = await admin();
		const socket = await gw2.socket(demoted.accessToken);
		const rolesPushed = new Promise<{ roles: string[] }>(resolve => socket.once("auth:roles", resolve));
		expect((await gw2.api.get("/api/admin/users", { token: demoted.accessToken })).status).toBe(200);
		expect(await socket.timeout(3000).emitWithAck("whoami", {})).toMatchObject({ user: { roles: ["user", "admin"] } });

		const change = await gw1.api.put(`/api/admin/users/${demoted.userId}/roles`, { token: boss.accessToken, body: { roles: ["user"] } });
		expect(change.status).toBe(200);
		// The token still claims admin; the record no longer does.
		const http = await gw2.api.get("/api/admin/users", { token: demoted.accessToken });
		expect(http.status).toBe(403);
		expect(http.body).toMatchObject({ type: "FORBIDDEN" });
		expect(await socket.timeout(3000).emitWithAck("whoami", {})).toMatchObject({ user: { roles: ["user"] } });
		expect(await rolesPushed).toEqual({ roles: ["user"] });
		// A downgrade, not a sign-out: the socket and the token still work for what a user may do.
		expect(socket.connected).toBe(true);
		expect((await gw2.api.get("/api/me", { token: demoted.accessToken })).status).toBe(200);
		console.log("role change: admin route after demotion answered 403 over HTTP; socket roles now", JSON.stringify(["user"]));
	});

	it("disabling a user closes all of its sockets, refuses its tokens, keys and sign-in, and enabling lets it sign in again", async () => {
		const boss = await admin();
		const user = await signUp(gw1.api, "disabled");
		const key = await gw1.api.post<{ key: string }>("/api/keys", { token: user.accessToken, body: { name: "disabled" } });
		const keySocket = await gw2.socket(key.body.key);
		const keyWatch = watchRevocation(keySocket);

		const figures = await afterRevocation(user.accessToken, async () => {
			const res = await gw1.api.put<{ disabled: boolean }>(`/api/admin/users/${user.userId}/status`, { token: boss.accessToken, body: { disabled: true } });
			expect(res.body).toMatchObject({ disabled: true });
			return res.status;
		});
		report("user disable", figures);
		expect(figures.sent.accepted).toBe(0);
		expect(figures.idleSeen).toEqual({ code: "ACCOUNT_DISABLED", disconnect: "io server disconnect" });
		expect(await keyWatch.closed()).toEqual({ code: "ACCOUNT_DISABLED", disconnect: "io server disconnect" });

		for (const token of [user.accessToken, key.body.key]) {
			const http = await gw2.api.get("/api/me", { token });
			expect(http.status).toBe(403);
			expect(http.body).toMatchObject({ type: "ACCOUNT_DISABLED" });
		}
		const login = await gw2.api.post("/api/auth/login", { body: { email: user.email, password: user.password } });
		expect(login.status).toBe(403);
		expect(login.body).toMatchObject({ type: "ACCOUNT_DISABLED" });
		const refresh = await gw2.api.post("/api/auth/refresh", { body: { refreshToken: user.refreshToken } });
		expect(refresh.status).toBe(401);
		// A wrong password is told nothing about the account's status.
		const wrong = await gw2.api.post("/api/auth/login", { body: { email: user.email, password: "not the password at all" } });
		expect(wrong.body).toMatchObject({ type: "INVALID_CREDENTIALS" });
		// The handshake is refused too.
		await expect(openSocket(gw2.url, key.body.key)).rejects.toMatchObject({ data: { code: "ACCOUNT_DISABLED" } });

		const enabled = await gw1.api.put(`/api/admin/users/${user.userId}/status`, { token: boss.accessToken, body: { disabled: false } });
		expect(enabled.body).toMatchObject({ disabled: false });
		expect((await gw2.api.post("/api/auth/login", { body: { email: user.email, password: user.password } })).status).toBe(200);
	});

	it("the status route is for admins, validates its body, and an admin cannot disable themselves", async () => {
		const boss = await admin();
		const user = await signUp(gw1.api, "plain");
		const forbidden = await gw1.api.put(`/api/admin/users/${boss.userId}/status`, { token: user.accessToken, body: { disabled: true } });
		expect(forbidden.status).toBe(403);
		expect((await gw1.api.put(`/api/admin/users/${user.userId}/status`, { token: boss.accessToken, body: { disabled: "yes" } })).status).toBe(422);
		const self = await gw1.api.put(`/api/admin/users/${boss.userId}/status`, { token: boss.accessToken, body: { disabled: true } });
		expect(self.status).toBe(409);
		const missing = await gw1.api.put("/api/admin/users/00000000-0000-4000-8000-000000000000/status", { token: boss.accessToken, body: { disabled: true } });
		expect(missing.status).toBe(404);
		expect((await gw1.api.get("/api/me", { token: boss.accessToken })).status).toBe(200);
	});
});

describe("sessions refreshed on a socket", () => {
	it("a socket that moved to a new session by auth:refresh follows the new session, not the old one", async () => {
		const user = await signUp(gw1.api, "moved");
		const socket = await gw2.socket(user.accessToken);
		const watch = watchRevocation(socket);
		const second = await gw1.api.post<{ accessToken: string; refreshToken: string }>("/api/auth/login", {
			body: { email: user.email, password: user.password }
		});
		expect(await socket.timeout(3000).emitWithAck("auth:refresh", { token: second.body.accessToken })).toMatchObject({ ok: true });
		expect(sessionOf(second.body.accessToken)).not.toBe(sessionOf(user.accessToken));

		// Signing out the first session leaves it open...
		expect((await gw1.api.post("/api/auth/logout", { body: { refreshToken: user.refreshToken } })).status).toBe(204);
		expect(await socket.timeout(3000).emitWithAck("whoami", {})).toMatchObject({ user: { id: user.userId } });
		// ...signing out the second closes it.
		expect((await gw1.api.post("/api/auth/logout", { body: { refreshToken: second.body.refreshToken } })).status).toBe(204);
		expect(await watch.closed()).toEqual({ code: "TOKEN_REVOKED", disconnect: "io server disconnect" });
	});
});
