/**
 * What a node owns besides its services: its configuration, database and model providers.
 * Each broker has its own runtime (tests run several brokers in one process), looked up here
 * by the broker rather than through module-level singletons.
 */
import type { ServiceBroker } from "moleculer";
import type { ChatmeshConfig, ProviderConfig } from "./config";
import type { Database } from "./db";
import type { GenerationLog } from "./generations/log";

export interface Runtime {
	config: ChatmeshConfig;
	/** Present on nodes that run a service needing the database. */
	database?: Database;
	/** The ordered provider list: the configured one, or the built-in simulator. */
	providers: ProviderConfig[];
	/** Signs and verifies access tokens (see lib/secrets.ts). */
	jwtSecret: string;
	/** The replay log of streamed answers, on nodes that write or serve them. */
	generations?: GenerationLog;
}

/** Broadcast to a node's own services when it begins to stop. */
export const NODE_STOPPING_EVENT = "chatmesh.node.stopping";

const runtimes = new WeakMap<ServiceBroker, Runtime>();

export function attachRuntime(broker: ServiceBroker, runtime: Runtime): void {
	runtimes.set(broker, runtime);
}

export function hasRuntime(broker: ServiceBroker): boolean {
	return runtimes.has(broker);
}

export function runtimeOf(broker: ServiceBroker): Runtime {
	const runtime = runtimes.get(broker);
	if (!runtime) throw new Error(`broker ${broker.nodeID} has no chatmesh runtime attached`);
	return runtime;
}
