/**
 * The token signing secret. Configured (JWT_SECRET) it is used as is; on a single process outside
 * production chatmesh makes a random one once and keeps it in the data directory, so sessions
 * survive restarts without anyone choosing a weak default.
 */
import crypto from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import type { ChatmeshConfig } from "./config";

export async function resolveJwtSecret(config: ChatmeshConfig): Promise<string> {
	if (config.jwtSecret) return config.jwtSecret;
	const file = path.join(config.dataDir, "jwt-secret");
	try {
		const existing = (await fs.readFile(file, "utf8")).trim();
		if (existing.length >= 32) return existing;
	} catch (err) {
		if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
	}
	await fs.mkdir(config.dataDir, { recursive: true });
	const secret = crypto.randomBytes(48).toString("base64url");
	await fs.writeFile(file, `${secret}\n`, { mode: 0o600 });
	return secret;
}
