/**
 * The socket.io connection. It always connects with the current access token, sends each renewed
 * token with `auth:refresh`, and comes back by itself: after a network drop (socket.io's own
 * reconnection), after the server closed it because the token expired (refresh, then reconnect),
 * and after a refused handshake (refresh when the token was the reason, else back off).
 * `onConnect` runs on every (re)connection, which is where answers in flight are resubscribed.
 */
import { io } from "/vendor/socket.io.esm.min.js";
import { ApiError, accessToken, currentAccessToken, onToken, refresh } from "./api.js";

const ACK_TIMEOUT_MS = 15_000;
const CONNECT_WAIT_MS = 5000;
const TOKEN_CODES = new Set(["TOKEN_EXPIRED", "INVALID_TOKEN", "UNAUTHORIZED", "TOKEN_REVOKED", "ACCOUNT_DISABLED"]);

export function createSocket({ onConnect, onStatus }) {
	const socket = io({
		autoConnect: false,
		transports: ["websocket", "polling"],
		tryAllTransports: true,
		auth: cb => cb({ token: currentAccessToken() })
	});
	let closed = false;
	let retryTimer = null;
	let failures = 0;

	const status = value => onStatus?.(value);

	/** Resolves true once connected, false if that takes longer than `ms`. */
	function connected(ms) {
		if (socket.connected) return Promise.resolve(true);
		return new Promise(resolve => {
			const done = ok => {
				clearTimeout(timer);
				socket.off("connect", onConnected);
				resolve(ok);
			};
			const onConnected = () => done(true);
			const timer = setTimeout(() => done(false), ms);
			socket.on("connect", onConnected);
		});
	}

	async function connect() {
		if (closed || socket.connected) return;
		clearTimeout(retryTimer);
		try {
			await accessToken();
		} catch (err) {
			if (err.code === "OFFLINE" || err.status >= 500 || err.code === "RATE_LIMITED") return retry(err.retryAfter);
			return; // signed out
		}
		if (!closed) socket.connect();
	}

	function retry(afterS) {
		if (closed) return;
		failures += 1;
		const delay = afterS ? afterS * 1000 : Math.min(30_000, 250 * 2 ** Math.min(failures, 7));
		clearTimeout(retryTimer);
		retryTimer = setTimeout(connect, delay);
	}

	socket.on("connect", () => {
		failures = 0;
		status("connected");
		onConnect?.();
	});

	socket.on("disconnect", reason => {
		if (closed) return;
		status(navigator.onLine ? "reconnecting" : "offline");
		// socket.io reconnects by itself after a drop, but not when the server closed the connection.
		if (reason === "io server disconnect") retry();
	});

	socket.on("connect_error", err => {
		if (closed) return;
		status(navigator.onLine ? "reconnecting" : "offline");
		if (socket.active) return; // a transport problem: socket.io retries by itself
		const code = err.data?.code;
		if (TOKEN_CODES.has(code)) refresh().then(connect, e => (e.status === 401 ? undefined : retry()));
		else retry(code === "RATE_LIMITED" ? err.data?.data?.retryAfter : null);
	});

	// The server says the token is about to be (or is) expired; it closes the connection after this.
	socket.on("auth:expired", () => {
		refresh().catch(() => {});
	});

	// The session was signed out elsewhere, the key revoked or the account disabled: a refresh
	// either finds the session alive (then the socket reconnects) or fails and ends it, which
	// api.js reports to the user; its error needs no second report here.
	socket.on("auth:revoked", () => {
		refresh().catch(() => {});
	});

	const offToken = onToken(token => {
		if (!socket.connected) return;
		socket.timeout(ACK_TIMEOUT_MS).emit("auth:refresh", { token }, (err, ack) => {
			// Refused (or no answer): start over with the new token.
			if (err || ack?.error) socket.disconnect().connect();
		});
	});

	const online = () => (socket.connected ? status("connected") : connect());
	const offline = () => status("offline");
	window.addEventListener("online", online);
	window.addEventListener("offline", offline);

	return {
		raw: socket,
		get connected() {
			return socket.connected;
		},
		connect,
		on: (event, fn) => socket.on(event, fn),
		/**
		 * Emits an event and resolves with its acknowledgement; an `{error}` ack becomes an ApiError.
		 * While (re)connecting it waits a few seconds for the connection before giving up.
		 */
		async call(event, payload) {
			if (!socket.connected && !(await connected(closed ? 0 : CONNECT_WAIT_MS)))
				throw new ApiError("OFFLINE", "You're offline, so this wasn't sent. Reconnecting…");
			let ack;
			try {
				ack = await socket.timeout(ACK_TIMEOUT_MS).emitWithAck(event, payload);
			} catch {
				throw new ApiError("OFFLINE", "The server didn't answer. Check your connection.");
			}
			if (ack?.error) throw new ApiError(ack.error.code, ack.error.message, { data: ack.error.data ?? null });
			return ack;
		},
		close() {
			closed = true;
			clearTimeout(retryTimer);
			offToken();
			window.removeEventListener("online", online);
			window.removeEventListener("offline", offline);
			socket.disconnect();
		}
	};
}
