/** ioredis options from a redis:// URL, shared by the cacher and the gateway's rate limiter. */
import type { RedisOptions } from "ioredis";

export function redisOptions(url: string): RedisOptions {
	const u = new URL(url);
	return {
		host: u.hostname,
		port: u.port ? Number(u.port) : 6379,
		db: u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0,
		username: u.username ? decodeURIComponent(u.username) : undefined,
		password: u.password ? decodeURIComponent(u.password) : undefined,
		tls: u.protocol === "rediss:" ? {} : undefined,
		// Fail fast while Redis is away instead of queueing commands without bound.
		maxRetriesPerRequest: 1,
		enableOfflineQueue: false
	};
}
