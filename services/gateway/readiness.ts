/**
 * Readiness of a gateway node: its database, its cacher, its transporter and at least one model
 * endpoint served by a live llm node, wherever it runs. Checks run in parallel, each bounded by
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

/** The nodes whose llm.health endpoint the registry holds available (this node included). */
function llmNodes(broker: ServiceBroker): string[] {
	const list = broker.registry.getActionEndpoints("llm.health") as { endpoints: Array<{ isAvailable: boolean; node: { id: string } }> } | undefined;
	return (list?.endpoints ?? []).filter(ep => ep.isAvailable).map(ep => ep.node.id);
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
	// Every llm node is asked at once, and one that serves a model is enough: a node that died
	// (and is still in the registry until its heartbeats time out) must not make this one unready.
	const models: Check = async () => {
		const nodes = llmNodes(broker);
		if (nodes.length === 0) throw new Error("no llm node is available");
		// The first node that serves a model answers the check; a dead one is not waited for.
		const serving = nodes.map(async nodeID => {
			const providers = await ctx.call<ProviderHealth[], Record<string, never>>("llm.health", {}, { nodeID, timeout: CHECK_TIMEOUT_MS, retries: 0 });
			const up = providers.filter(p => p.ok).map(p => p.name);
			if (up.length === 0) throw new Error(`no model endpoint answered through ${nodeID}`);
			return up.join(", ");
		});
		return Promise.any(serving).catch(() => {
			throw new Error(`no model endpoint answered through ${nodes.length} llm node(s)`);
		});
	};
	const [db, cache, transport, model] = await Promise.all([database, cacher, transporter, models].map(run));
	const checks = { database: db, cacher: cache, transporter: transport, models: model };
	const ready = Object.values(checks).every(c => c.status === "ok");
	return { status: ready ? "ready" : "not_ready", nodeID: broker.nodeID, checks };
}
