/**
 * The image's HEALTHCHECK (`node dist/healthcheck.js [live]`): asks this container's node whether
 * it is ready (or, with `live`, alive) with Node's own fetch, so the image needs no curl. It reads
 * the same configuration as the node: a gateway answers on PORT, any node on HEALTH_PORT.
 * Exit 0: healthy; 1: not (the reason on stderr).
 */
import { loadConfig } from "../lib/config";

const live = process.argv[2] === "live";
const TIMEOUT_MS = 3000;

function target(): string {
	const config = loadConfig(process.env);
	const host = config.host === "0.0.0.0" || config.host === "::" ? "127.0.0.1" : config.host;
	const path = live ? "/health" : "/ready";
	// The gateway's own readiness covers more (cacher, any llm node), so it is preferred.
	if (config.services.includes("gateway")) return `http://${host}:${config.port}${path}`;
	if (config.healthPort !== undefined) return `http://${host}:${config.healthPort}${path}`;
	throw new Error("this node has no gateway and HEALTH_PORT is unset: nothing to probe");
}

try {
	const url = target();
	const res = await fetch(url, { signal: AbortSignal.timeout(TIMEOUT_MS) });
	if (res.status !== 200) {
		process.stderr.write(`healthcheck: ${url} answered ${res.status}: ${(await res.text()).slice(0, 500)}\n`);
		process.exit(1);
	}
	process.exit(0);
} catch (err) {
	process.stderr.write(`healthcheck: ${(err as Error).message}\n`);
	process.exit(1);
}
