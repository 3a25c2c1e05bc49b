/**
 * Open sockets follow their credentials. Each socket joins a room per user, session (access token)
 * or API key as it connects; socket.io keeps those rooms as this node's index and drops a socket
 * from them when it disconnects. When the user service broadcasts that credentials stopped
 * holding, every gateway tells the sockets it holds why (`auth:revoked { code }`) and closes them;
 * a role change updates their roles in place (`auth:roles { roles }`).
 */
import type { CredentialsChangedEvent } from "../../lib/auth";
import { ERR_TOKEN_EXPIRED } from "../../lib/errors";
import type { ChatServer, ChatSocket } from "./sockets";

export const userRoom = (userId: string) => `user:${userId}`;
const sessionRoom = (sessionId: string) => `session:${sessionId}`;
const keyRoom = (keyId: string) => `key:${keyId}`;

/** (Re)joins the rooms of the socket's current credential, leaving those of a previous one. */
export function indexSocket(socket: ChatSocket): void {
	for (const room of socket.rooms) if (room !== socket.id) void socket.leave(room);
	const { user, sessionId, keyId } = socket.data;
	const rooms = [userRoom(user.id)];
	if (sessionId) rooms.push(sessionRoom(sessionId));
	if (keyId) rooms.push(keyRoom(keyId));
	void socket.join(rooms);
}

/** Tells the client why, then closes: an expired token can be refreshed, a revoked one cannot. */
export function endSocket(socket: ChatSocket, code: string): void {
	if (code === ERR_TOKEN_EXPIRED) socket.emit("auth:expired", { code, message: "Access token expired: refresh it and reconnect" });
	else socket.emit("auth:revoked", { code, message: "These credentials no longer hold: sign in again" });
	socket.disconnect(true);
}

function socketsIn(io: ChatServer, room: string): ChatSocket[] {
	const found: ChatSocket[] = [];
	for (const id of io.sockets.adapter.rooms.get(room) ?? []) {
		const socket = io.sockets.sockets.get(id);
		if (socket) found.push(socket);
	}
	return found;
}

/** Applies a change to this node's sockets; returns how many it touched. */
export function applyCredentialsChange(io: ChatServer, change: CredentialsChangedEvent): number {
	const room =
		change.change === "sessionRevoked" ? sessionRoom(change.sessionId) : change.change === "apiKeyRevoked" ? keyRoom(change.keyId) : userRoom(change.userId);
	const affected = socketsIn(io, room);
	for (const socket of affected) {
		if (change.change === "rolesChanged") {
			socket.data.user = { id: change.userId, roles: change.roles };
			socket.emit("auth:roles", { roles: change.roles });
		} else endSocket(socket, change.code);
	}
	return affected.length;
}
