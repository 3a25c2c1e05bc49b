/**
 * The gateway's socket.io server, on the same HTTP server as the REST routes. Handshakes carry the
 * same bearer credentials as HTTP (`auth: { token }`), and a bad one counts against the address as
 * on HTTP; each event is counted by the same rate limiter as an HTTP request; a connection whose
 * access token expires is told why and closed, and may send a fresh token (`auth:refresh`) before
 * that to stay open. Before every event the credential is resolved again through the cached
 * `user.resolveToken` (one cache read; revocations delete the entry cluster-wide before they
 * answer), so no event is accepted after a logout, key revocation or account disable has
 * answered, even before the broadcast closing the socket (socket-revocation.ts) reaches this node.
 * Only the events registered here exist: there is no bridge that lets a client call arbitrary actions.
 */
import { randomUUID } from "node:crypto";
import type { Server as HttpServer } from "node:http";
import type { ServiceBroker } from "moleculer";
import { Server, type Socket } from "socket.io";
import type { AuthUser } from "../../lib/auth";
import { ERR_INTERNAL, ERR_TOKEN_EXPIRED, ERR_UNAUTHORIZED, UnauthorizedError } from "../../lib/errors";
import { assertCleanInput } from "../../lib/input";
import { runInRequest } from "../../lib/request-context";
import { increment } from "../../lib/metrics";
import type { ResolvedCredential } from "../user/user.service";
import { toPublicError } from "./http-errors";
import { RateLimiter, type RouteClass } from "./rate-limit";
import { endSocket, indexSocket } from "./socket-revocation";

export interface SocketData {
	user: AuthUser;
	/** The credential the socket runs on, checked again before every event. */
	token: string;
	/** Milliseconds since the epoch; null for API keys. */
	expiresAt: number | null;
	/** Its session (access token) or key (API key): the rooms a revocation is sent to. */
	sessionId?: string;
	keyId?: string;
	ip: string;
	expiryTimer?: NodeJS.Timeout;
}

/** What an acknowledgement carries when an event fails. */
export interface SocketErrorAck {
	error: { code: string; message: string; data?: unknown };
}

export type ChatSocket = Socket<Record<string, (...args: never[]) => void>, Record<string, (...args: unknown[]) => void>, Record<string, never>, SocketData>;
export type ChatServer = Server<Record<string, (...args: never[]) => void>, Record<string, (...args: unknown[]) => void>, Record<string, never>, SocketData>;

type Ack = (response: unknown) => void;
export type SocketHandler = (socket: ChatSocket, payload: unknown) => Promise<unknown>;

export interface SocketServerOptions {
	broker: ServiceBroker;
	server: HttpServer;
	rateLimiter: RateLimiter;
	clientIp(socket: Socket): string;
	maxPayloadBytes: number;
	/** Event name → handler and the rate-limit class it counts against. */
	handlers: Record<string, { rateClass: RouteClass; handle: SocketHandler }>;
}

/** The HTTP error mapping, as an ack: the same types (503 for an outage, INTERNAL_ERROR for the unknown). */
function toAck(err: unknown): SocketErrorAck {
	const { type, message, data } = toPublicError(err, undefined);
	return type === ERR_INTERNAL ? { error: { code: type, message } } : { error: { code: type, message, data } };
}

/**
 * Every event first passes the HTTP body checks; a refusal is the event's ack (no ack: dropped).
 * The handlers take (payload, ack), so the packet is made exactly that: a missing payload becomes
 * undefined and extra arguments are dropped (one of them would otherwise be taken for the ack).
 */
function checkPayload(packet: unknown[], next: (err?: Error) => void): void {
	const last = packet.at(-1);
	const ack = packet.length > 1 && typeof last === "function" ? (last as Ack) : undefined;
	const payload = typeof packet[1] === "function" ? undefined : packet[1];
	packet.splice(1, packet.length - 1, payload, ...(ack ? [ack] : []));
	try {
		assertCleanInput(payload, "payload");
	} catch (err) {
		ack?.(toAck(err));
		return;
	}
	next();
}

async function resolve(broker: ServiceBroker, token: unknown): Promise<ResolvedCredential & { token: string }> {
	if (typeof token !== "string" || token.length === 0) throw new UnauthorizedError("A token is required in the handshake auth", ERR_UNAUTHORIZED);
	const resolved = await broker.call<ResolvedCredential, { token: string }>("user.resolveToken", { token });
	if (resolved.expiresAt !== null && resolved.expiresAt <= Date.now()) throw new UnauthorizedError("Access token expired", ERR_TOKEN_EXPIRED);
	return { ...resolved, token };
}

/** The socket runs on this credential from now on. */
function adopt(socket: ChatSocket, resolved: ResolvedCredential & { token: string }, ip: string): void {
	const { user, token, expiresAt, sessionId, keyId } = resolved;
	Object.assign(socket.data, { user, token, expiresAt, sessionId, keyId, ip });
}

/** A 401 or 403: the credential itself no longer holds (not a failure of the check). */
function refusesCredential(err: unknown): err is { type: string } {
	const { code, type } = err as { code?: unknown; type?: unknown };
	return (code === 401 || code === 403) && typeof type === "string";
}

/** Before an event: the credential again, through the cache, with the user's current roles. */
async function recheck(broker: ServiceBroker, socket: ChatSocket): Promise<void> {
	socket.data.user = (await resolve(broker, socket.data.token)).user;
}

/** Closes the connection when its access token expires, saying why first. */
function armExpiry(socket: ChatSocket): void {
	clearTimeout(socket.data.expiryTimer);
	const { expiresAt } = socket.data;
	if (expiresAt === null) return;
	socket.data.expiryTimer = setTimeout(
		() => {
			socket.emit("auth:expired", { code: ERR_TOKEN_EXPIRED, message: "Access token expired: refresh it and reconnect" });
			socket.disconnect(true);
		},
		Math.max(0, expiresAt - Date.now())
	);
	socket.data.expiryTimer.unref();
}

export function createSocketServer(opts: SocketServerOptions): ChatServer {
	const io: ChatServer = new Server(opts.server, { serveClient: false, maxHttpBufferSize: opts.maxPayloadBytes, transports: ["websocket", "polling"] });

	/** The handshake counts like an HTTP request: with its caller when the credential holds, else against the address alone. */
	async function admit(socket: ChatSocket): Promise<void> {
		const ip = opts.clientIp(socket);
		let resolved: ResolvedCredential & { token: string };
		try {
			resolved = await resolve(opts.broker, (socket.handshake.auth as { token?: unknown } | undefined)?.token);
		} catch (err) {
			// A bad credential still counts against the address, so guessing costs handshakes.
			RateLimiter.assertAllowed(await opts.rateLimiter.consume("default", ip));
			throw err;
		}
		RateLimiter.assertAllowed(await opts.rateLimiter.consume("default", ip, resolved.user.id));
		adopt(socket, resolved, ip);
	}

	io.use((socket, next) => {
		admit(socket)
			.then(() => next())
			.catch(async (err: unknown) => {
				const ack = toAck(err);
				const error = Object.assign(new Error(ack.error.message), { data: ack.error });
				next(error);
			});
	});

	io.on("connection", (raw: Socket) => {
		const socket = raw as unknown as ChatSocket;
		indexSocket(socket);
		armExpiry(socket);
		socket.on("disconnect", () => clearTimeout(socket.data.expiryTimer));
		socket.use(checkPayload);

		// A fresh access token keeps the connection open past the old token's expiry.
		socket.on("auth:refresh", async (payload: unknown, ack?: Ack) => {
			increment(opts.broker, "socketEvents", { event: "auth:refresh" });
			try {
				const resolved = await resolve(opts.broker, (payload as { token?: unknown } | undefined)?.token);
				if (resolved.user.id !== socket.data.user.id) throw new UnauthorizedError("The token belongs to another user");
				adopt(socket, resolved, socket.data.ip);
				indexSocket(socket);
				armExpiry(socket);
				ack?.({ ok: true, expiresAt: resolved.expiresAt });
			} catch (err) {
				ack?.(toAck(err));
			}
		});

		for (const [event, { rateClass, handle }] of Object.entries(opts.handlers)) {
			const handleEvent = async (payload: unknown, ack?: Ack) => {
				increment(opts.broker, "socketEvents", { event });
				let checked = false;
				try {
					RateLimiter.assertAllowed(await opts.rateLimiter.consume(rateClass, socket.data.ip, socket.data.user.id));
					await recheck(opts.broker, socket);
					checked = true;
					const result = await handle(socket, payload);
					ack?.(result ?? { ok: true });
				} catch (err) {
					const response = toAck(err);
					if (response.error.code === "INTERNAL_ERROR") opts.broker.logger.error(`socket event ${event} failed`, err);
					ack?.(response);
					// A credential that no longer holds ends the connection, after the refusal; a failing check only fails the event.
					if (!checked && refusesCredential(err)) endSocket(socket, err.type);
				}
			};
			// Each event is a request of its own: its calls and log lines share one fresh request id.
			socket.on(event, (payload: unknown, ack?: Ack) => {
				const requestId = randomUUID();
				return runInRequest({ id: requestId, requestID: requestId, tracing: null }, handleEvent, payload, ack);
			});
		}
	});
	return io;
}
