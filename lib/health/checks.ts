/**
 * The dependency checks behind every readiness answer: the gateway's /ready (on PORT) and the health
 * listener's /ready of the other nodes. Each check is bounded by a timeout and they run in
 * parallel, so an answer comes in about that time even when a dependency hangs.
 */
import type { ServiceBroker } from "moleculer";
import type { ProviderHealth } from "../../services/llm/llm.service";
import { withTimeout } from "../db";
import type { Runtime } from "../runtime";

export type CheckStatus = "ok" | "fail";

export interface CheckResult {
	status: CheckStatus;
	/** What was checked (e.g. "redis", "nats", "embedded") or why it failed. */
	detail: string;
	durationMs: number;
}

/** Resolves with what it checked, or rejects with why the dependency is not usable. */
export type Check = () => Promise<string>;

export const CHECK_TIMEOUT_MS = 2000;

/** A node that has begun to stop answers not ready at once, before it drains (see node.ts). */
const stoppingBrokers = new WeakSet<ServiceBroker>();

export function markStopping(broker: ServiceBroker): void {
	stoppingBrokers.add(broker);
}

export function isStopping(broker: ServiceBroker): boolean {
	return stoppingBrokers.has(broker);
}

async function run(check: Check): Promise<CheckResult> {
	const start = performance.now();
	try {
		const detail = await withTimeout(check(), CHECK_TIMEOUT_MS, `timed out after ${CHECK_TIMEOUT_MS} ms`);
		return { status: "ok", detail, durationMs: Math.round(performance.now() - start) };
	} catch (err) {
		return { status: "fail", detail: (err as Error).message, durationMs: Math.round(performance.now() - start) };
	}
}

/** Runs the checks in parallel; ready when every one passed. */
export async function runChecks<K extends string>(checks: Record<K, Check>): Promise<{ ready: boolean; checks: Record<K, CheckResult> }> {
	const names = Object.keys(checks) as K[];
	const results = await Promise.all(names.map(name => run(checks[name])));
	const byName = Object.fromEntries(names.map((name, i) => [name, results[i]])) as Record<K, CheckResult>;
	return { ready: results.every(r => r.status === "ok"), checks: byName };
}

export function databaseCheck(runtime: Runtime): Check {
	return async () => {
		if (!runtime.database) throw new Error("no database configured on this node");
		await runtime.database.ping(CHECK_TIMEOUT_MS);
		return runtime.database.embedded ? "embedded" : "postgresql";
	};
}

interface RedisLikeCacher {
	client?: { ping(): Promise<string> };
}

export function cacherCheck(broker: ServiceBroker): Check {
	return async () => {
		if (!broker.cacher) throw new Error("no cacher");
		const client = (broker.cacher as unknown as RedisLikeCacher).client;
		if (!client) return "memory";
		await client.ping();
		return "redis";
	};
}

/** The NATS client under Moleculer's transporter; rtt() rejects while it is disconnected. */
interface NatsLikeTransporter {
	client?: { rtt(): Promise<number> };
}

export function transporterCheck(broker: ServiceBroker): Check {
	return async () => {
		if (!broker.transit) return "none (single process)";
		if (!broker.transit.connected) throw new Error("not connected");
		// The transporter keeps reconnecting forever, so `connected` stays true through an outage:
		// a round trip to the server is what tells.
		const client = (broker.transit.tx as unknown as NatsLikeTransporter).client;
		if (client) await client.rtt().catch(() => Promise.reject(new Error("NATS server unreachable")));
		return "nats";
	};
}

/** The nodes whose llm.health endpoint the registry holds available (this node included). */
function llmNodes(broker: ServiceBroker): string[] {
	const list = broker.registry.getActionEndpoints("llm.health") as { endpoints: Array<{ isAvailable: boolean; node: { id: string } }> } | undefined;
	return (list?.endpoints ?? []).filter(ep => ep.isAvailable).map(ep => ep.node.id);
}

type CallLlmHealth = (nodeID: string) => Promise<ProviderHealth[]>;

/**
 * At least one model endpoint answers, through any of `nodes` (default: every available llm
 * node). Every node is asked at once and the first one serving a model answers the check, so a
 * node that died (and is still in the registry until its heartbeats time out) is not waited for.
 */
export function modelsCheck(broker: ServiceBroker, callHealth: CallLlmHealth, nodes?: string[]): Check {
	return async () => {
		const asked = nodes ?? llmNodes(broker);
		if (asked.length === 0) throw new Error("no llm node is available");
		const serving = asked.map(async nodeID => {
			const providers = await callHealth(nodeID);
			const up = providers.filter(p => p.ok).map(p => p.name);
			if (up.length === 0) throw new Error(`no model endpoint answered through ${nodeID}`);
			return up.join(", ");
		});
		return Promise.any(serving).catch(() => {
			throw new Error(`no model endpoint answered through ${asked.length} llm node(s)`);
		});
	};
}

/** The check every readiness answer carries first: the node has begun to stop. */
export function notStoppingCheck(broker: ServiceBroker): Check {
	return async () => {
		if (isStopping(broker)) throw new Error("node is stopping");
		return "running";
	};
}
