/**
 * The credentials chatmesh hands out: short-lived access JWTs (HS256, issuer and audience
 * checked, algorithm pinned), opaque refresh tokens and API keys. Refresh tokens and API keys
 * are long random strings stored only as SHA-256 hashes.
 */
import crypto from "node:crypto";
import { errors as joseErrors, jwtVerify, SignJWT } from "jose";
import { ERR_INVALID_TOKEN, ERR_TOKEN_EXPIRED, UnauthorizedError } from "../../lib/errors";

const TOKEN_ISSUER = "chatmesh";
const TOKEN_AUDIENCE = "chatmesh-api";
const API_KEY_PREFIX = "cm_";
const REFRESH_TOKEN_PREFIX = "rt_";
/** How many characters of an API key are kept visible (e.g. in a key list). */
const VISIBLE_KEY_CHARS = API_KEY_PREFIX.length + 8;

export interface AccessClaims {
	userId: string;
	sessionId: string;
	roles: string[];
	/** Milliseconds since the epoch. */
	expiresAt: number;
}

export function sha256(value: string): string {
	return crypto.createHash("sha256").update(value).digest("hex");
}

export function signingKey(secret: string): Uint8Array {
	return new TextEncoder().encode(secret);
}

export async function signAccessToken(
	key: Uint8Array,
	claims: { userId: string; sessionId: string; roles: string[] },
	ttlS: number
): Promise<{ token: string; expiresAt: number }> {
	const now = Math.floor(Date.now() / 1000);
	const token = await new SignJWT({ sid: claims.sessionId, roles: claims.roles })
		.setProtectedHeader({ alg: "HS256", typ: "JWT" })
		.setSubject(claims.userId)
		.setIssuer(TOKEN_ISSUER)
		.setAudience(TOKEN_AUDIENCE)
		.setIssuedAt(now)
		.setExpirationTime(now + ttlS)
		.setJti(crypto.randomUUID())
		.sign(key);
	return { token, expiresAt: (now + ttlS) * 1000 };
}

/** Verifies signature, algorithm, issuer, audience and expiry; 401 with a stable type otherwise. */
export async function verifyAccessToken(key: Uint8Array, token: string): Promise<AccessClaims> {
	try {
		const { payload } = await jwtVerify(token, key, {
			algorithms: ["HS256"],
			issuer: TOKEN_ISSUER,
			audience: TOKEN_AUDIENCE,
			requiredClaims: ["sub", "exp", "sid"]
		});
		const roles = Array.isArray(payload.roles) ? payload.roles.filter((r): r is string => typeof r === "string") : [];
		if (typeof payload.sid !== "string" || typeof payload.sub !== "string") throw new Error("malformed claims");
		return { userId: payload.sub, sessionId: payload.sid, roles, expiresAt: (payload.exp as number) * 1000 };
	} catch (err) {
		if (err instanceof joseErrors.JWTExpired) throw new UnauthorizedError("Access token expired", ERR_TOKEN_EXPIRED);
		throw new UnauthorizedError("Invalid access token", ERR_INVALID_TOKEN, { reason: invalidReason(err) });
	}
}

function invalidReason(err: unknown): string {
	if (err instanceof joseErrors.JWTClaimValidationFailed) return `claim ${err.claim}`;
	if (err instanceof joseErrors.JOSEAlgNotAllowed) return "algorithm";
	if (err instanceof joseErrors.JWSSignatureVerificationFailed) return "signature";
	return "malformed";
}

/** The session id a JWT claims, without verifying it (for cache keys only). */
export function unverifiedSessionId(token: string): string | undefined {
	const payload = token.split(".")[1];
	if (!payload) return undefined;
	try {
		const sid = (JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as { sid?: unknown }).sid;
		return typeof sid === "string" && /^[0-9a-f-]{36}$/.test(sid) ? sid : undefined;
	} catch {
		return undefined;
	}
}

export function newRefreshToken(): { token: string; hash: string } {
	const token = REFRESH_TOKEN_PREFIX + crypto.randomBytes(32).toString("base64url");
	return { token, hash: sha256(token) };
}

export function newApiKey(): { key: string; prefix: string; hash: string } {
	const key = API_KEY_PREFIX + crypto.randomBytes(30).toString("base64url");
	return { key, prefix: key.slice(0, VISIBLE_KEY_CHARS), hash: sha256(key) };
}

export function isApiKey(token: string): boolean {
	return token.startsWith(API_KEY_PREFIX);
}
