/**
 * chatmesh's REST API and the session behind it. The access token is refreshed shortly before it
 * expires and once more when a request answers 401 TOKEN_EXPIRED. A refresh token works only once
 * (using one twice ends the session), so refreshes are single-flight and, across tabs, serialised
 * with a Web Lock; a tab that finds the stored session already renewed by another tab adopts it.
 */
import { savedSession, SESSION_STORAGE_KEY } from "./state.js";

/** An error as chatmesh reports it: `code` is the stable type (RATE_LIMITED, …), `status` the HTTP status. */
export class ApiError extends Error {
	constructor(code, message, { status = 0, data = null, retryAfter = null } = {}) {
		super(message || code);
		this.name = "ApiError";
		this.code = code;
		this.status = status;
		this.data = data;
		this.retryAfter = retryAfter ?? data?.retryAfter ?? null;
	}
}

/** Seconds before expiry at which a token counts as stale. */
const EARLY_S = 60;

let session = savedSession.load();
let refreshTimer = null;
let refreshing = null;
const tokenListeners = new Set();
const signedOutListeners = new Set();

/** Called with each new access token (the socket sends it to the server). */
export function onToken(fn) {
	tokenListeners.add(fn);
	return () => tokenListeners.delete(fn);
}
/** Called with a reason when the session ends without the user asking (revoked, expired). */
export const onSignedOut = fn => signedOutListeners.add(fn);
export const currentUser = () => session?.user ?? null;
export const currentAccessToken = () => session?.accessToken ?? null;

function setSession(next, { persist = true } = {}) {
	const previous = session?.accessToken;
	session = next;
	if (persist) savedSession.save(next);
	scheduleRefresh();
	if (next && next.accessToken !== previous) for (const fn of tokenListeners) fn(next.accessToken);
}

function endSession(reason) {
	session = null;
	clearTimeout(refreshTimer);
	savedSession.clear();
	for (const fn of signedOutListeners) fn(reason);
}

function fromAuthAnswer(body, user) {
	return {
		user: body.user ?? user,
		accessToken: body.accessToken,
		refreshToken: body.refreshToken,
		accessExpiresAt: Date.now() + body.expiresIn * 1000,
		lifetimeMs: body.expiresIn * 1000
	};
}

/** Refresh at 80% of the token's life, and at least a minute before it ends. */
function scheduleRefresh() {
	clearTimeout(refreshTimer);
	if (!session) return;
	const lifetime = session.lifetimeMs ?? 900_000;
	const at = session.accessExpiresAt - Math.max(lifetime * 0.2, Math.min(EARLY_S * 1000, lifetime * 0.5));
	refreshTimer = setTimeout(() => refresh().catch(() => {}), Math.max(1000, at - Date.now()));
}

// Timers sleep in background tabs: check again when the tab comes back.
document.addEventListener("visibilitychange", () => {
	if (document.visibilityState === "visible" && session && session.accessExpiresAt - Date.now() < EARLY_S * 1000) refresh().catch(() => {});
});

// Another tab renewed or ended the shared session.
window.addEventListener("storage", event => {
	if (event.key !== SESSION_STORAGE_KEY || !session) return;
	const stored = savedSession.load();
	if (!stored) endSession("You signed out in another tab.");
	else if (stored.refreshToken !== session.refreshToken) setSession(stored, { persist: false });
});

async function send(method, path, { body, token, headers = {} } = {}) {
	const init = { method, headers: { Accept: "application/json", ...headers } };
	if (token) init.headers.Authorization = `Bearer ${token}`;
	if (body !== undefined) {
		init.headers["Content-Type"] = "application/json";
		init.body = JSON.stringify(body);
	}
	let res;
	try {
		res = await fetch(path, init);
	} catch {
		throw new ApiError("OFFLINE", "Can't reach chatmesh. Check your connection.");
	}
	if (res.status === 204) return null;
	const text = await res.text();
	let parsed = null;
	try {
		parsed = text ? JSON.parse(text) : null;
	} catch {
		parsed = null;
	}
	if (!res.ok) {
		const retryAfter = Number(res.headers.get("Retry-After")) || null;
		throw new ApiError(parsed?.type ?? `HTTP_${res.status}`, parsed?.message ?? res.statusText, { status: res.status, data: parsed?.data ?? null, retryAfter });
	}
	return parsed;
}

async function withLock(fn) {
	if (navigator.locks?.request) return navigator.locks.request("chatmesh-token-refresh", fn);
	return fn();
}

/**
 * A new access token. `staleToken` is the one found expired: if the stored session already holds
 * another valid one (renewed by another tab), that one is adopted instead of spending the refresh token.
 */
export function refresh(staleToken = session?.accessToken) {
	refreshing ??= withLock(async () => {
		const stored = savedSession.load();
		if (!stored) {
			endSession("You were signed out.");
			throw new ApiError("UNAUTHORIZED", "Signed out");
		}
		if (stored.accessToken !== staleToken && stored.accessExpiresAt - Date.now() > EARLY_S * 1000) {
			setSession(stored, { persist: false });
			return stored.accessToken;
		}
		try {
			const body = await send("POST", "/api/auth/refresh", { body: { refreshToken: stored.refreshToken } });
			setSession(fromAuthAnswer(body, stored.user));
			return session.accessToken;
		} catch (err) {
			if (err.status === 401) endSession("Your session has ended. Please sign in again.");
			throw err;
		}
	}).finally(() => {
		refreshing = null;
	});
	return refreshing;
}

/** A usable access token: the current one, or a fresh one when it is about to expire. */
export async function accessToken() {
	if (refreshing) return refreshing;
	if (!session) throw new ApiError("UNAUTHORIZED", "Not signed in");
	if (session.accessExpiresAt - Date.now() > 10_000) return session.accessToken;
	return refresh();
}

/** An authenticated request; one retry after refreshing when the token turns out expired. */
export async function request(method, path, body) {
	const token = await accessToken();
	try {
		return await send(method, path, { body, token });
	} catch (err) {
		if (err.code !== "TOKEN_EXPIRED") {
			if (err.status === 401) endSession("Your session has ended. Please sign in again.");
			throw err;
		}
		return send(method, path, { body, token: await refresh(token) });
	}
}

/**
 * A file from an authenticated route, as a Blob and the name the server gives it
 * (Content-Disposition). The page cannot send its bearer token with a plain link, so downloads
 * go through fetch and a blob URL; the same refresh-and-retry as `request` applies.
 */
export async function download(path) {
	const get = async token => {
		try {
			return await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
		} catch {
			throw new ApiError("OFFLINE", "Can't reach chatmesh. Check your connection.");
		}
	};
	const failure = async res => {
		const body = await res.json().catch(() => null);
		return new ApiError(body?.type ?? `HTTP_${res.status}`, body?.message ?? res.statusText, { status: res.status, data: body?.data ?? null });
	};
	const token = await accessToken();
	let res = await get(token);
	if (res.status === 401) {
		const err = await failure(res);
		if (err.code !== "TOKEN_EXPIRED") {
			endSession("Your session has ended. Please sign in again.");
			throw err;
		}
		res = await get(await refresh(token));
	}
	if (!res.ok) throw await failure(res);
	return { blob: await res.blob(), contentDisposition: res.headers.get("Content-Disposition") };
}

export async function signIn(email, password) {
	setSession(fromAuthAnswer(await send("POST", "/api/auth/login", { body: { email, password } })));
	return session.user;
}

export async function signUp(email, password) {
	setSession(fromAuthAnswer(await send("POST", "/api/auth/register", { body: { email, password } })));
	return session.user;
}

export async function signOut() {
	const refreshToken = session?.refreshToken;
	session = null;
	clearTimeout(refreshTimer);
	savedSession.clear();
	if (refreshToken) await send("POST", "/api/auth/logout", { body: { refreshToken } }).catch(() => {});
}

/** Starts the refresh schedule of a session restored from storage. */
export function resume() {
	if (session) scheduleRefresh();
	return currentUser();
}

export const api = {
	models: () => request("GET", "/api/models"),
	usage: () => request("GET", "/api/usage"),
	conversations: (cursor, limit = 30) => request("GET", `/api/conversations?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`),
	conversation: id => request("GET", `/api/conversations/${encodeURIComponent(id)}`),
	rename: (id, title) => request("PATCH", `/api/conversations/${encodeURIComponent(id)}`, { title }),
	remove: id => request("DELETE", `/api/conversations/${encodeURIComponent(id)}`),
	messages: (id, cursor, limit = 50) =>
		request("GET", `/api/conversations/${encodeURIComponent(id)}/messages?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`),
	generation: id => request("GET", `/api/generations/${encodeURIComponent(id)}`),
	cancel: id => request("POST", `/api/generations/${encodeURIComponent(id)}/cancel`),
	startJob: (kind, input) => request("POST", "/api/jobs", { kind, input }),
	job: id => request("GET", `/api/jobs/${encodeURIComponent(id)}`),
	cancelJob: id => request("POST", `/api/jobs/${encodeURIComponent(id)}/cancel`)
};
