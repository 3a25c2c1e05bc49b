/**
 * Readiness of a gateway node: its database, its cacher, its transporter and at least one model
 * endpoint (through the llm service, wherever it runs). Checks run in parallel, each bounded by
 * a timeout, so /ready answers in about that time even when a dependency hangs.
 */
import type { Context, ServiceBroker } from "moleculer";
import { withTimeout } from "../../lib/db";
import type { Runtime } from "../../lib/runtime";
import type { ProviderHealth } from "../llm/llm.service";

export type CheckStatus = "ok" | "fail";

export interface CheckResult {
	status: CheckStatus;
	/** What was checked (e.g. "redis", "nats", "embedded") or why it failed. */
	detail: string;
	durationMs: number;
}

export interface Readiness {
	status: "ready" | "not_ready";
	nodeID: string;
	checks: Record<"database" | "cacher" | "transporter" | "models", CheckResult>;
}

type Check = () => Promise<string>;

const CHECK_TIMEOUT_MS = 2000;

async function run(check: Check): Promise<CheckResult> {
	const start = performance.now();
	try {
		const detail = await withTimeout(check(), CHECK_TIMEOUT_MS, `timed out after ${CHECK_TIMEOUT_MS} ms`);
		return { status: "ok", detail, durationMs: Math.round(performance.now() - start) };
	} catch (err) {
		return { status: "fail", detail: (err as Error).message, durationMs: Math.round(performance.now() - start) };
	}
}

interface RedisLikeCacher {
	client?: { ping(): Promise<string> };
}

export async function checkReadiness(ctx: Context, broker: ServiceBroker, runtime: Runtime): Promise<Readiness> {
	const database: Check = async () => {
		if (!runtime.database) throw new Error("no database configured on this node");
		await runtime.database.ping(CHECK_TIMEOUT_MS);
		return runtime.database.embedded ? "embedded" : "postgresql";
	};
	const cacher: Check = async () => {
		if (!broker.cacher) throw new Error("no cacher");
		const client = (broker.cacher as unknown as RedisLikeCacher).client;
		if (!client) return "memory";
		await client.ping();
		return "redis";
	};
	const transporter: Check = async () => {
		if (!broker.transit) return "none (single process)";
		if (!broker.transit.connected) throw new Error("not connected");
		return "nats";
	};
	const models: Check = async () => {
		const providers = await ctx.call<ProviderHealth[], Record<string, never>>("llm.health", {}, { timeout: CHECK_TIMEOUT_MS, retries: 0 });
		const up = providers.filter(p => p.ok);
		if (up.length === 0) throw new Error(`no model endpoint answered (${providers.map(p => p.name).join(", ")})`);
		return up.map(p => p.name).join(", ");
	};
	const [db, cache, transport, model] = await Promise.all([database, cacher, transporter, models].map(run));
	const checks = { database: db, cacher: cache, transporter: transport, models: model };
	const ready = Object.values(checks).every(c => c.status === "ok");
	return { status: ready ? "ready" : "not_ready", nodeID: broker.nodeID, checks };
}
