/**
 * Readiness of a gateway node: not stopping, its database, its cacher, its transporter and at
 * least one model endpoint served by a live llm node, wherever it runs. The checks themselves
 * are shared with the health listener of the other nodes (lib/health/checks.ts).
 */
import type { Context, ServiceBroker } from "moleculer";
import {
	CHECK_TIMEOUT_MS,
	cacherCheck,
	databaseCheck,
	modelsCheck,
	notStoppingCheck,
	runChecks,
	transporterCheck,
	type CheckResult
} from "../../lib/health/checks";
import type { Runtime } from "../../lib/runtime";
import type { ProviderHealth } from "../llm/llm.service";

export type { CheckResult, CheckStatus } from "../../lib/health/checks";

export interface Readiness {
	status: "ready" | "not_ready";
	nodeID: string;
	checks: Record<"lifecycle" | "database" | "cacher" | "transporter" | "models", CheckResult>;
}

export async function checkReadiness(ctx: Context, broker: ServiceBroker, runtime: Runtime): Promise<Readiness> {
	const { ready, checks } = await runChecks({
		lifecycle: notStoppingCheck(broker),
		database: databaseCheck(runtime),
		cacher: cacherCheck(broker),
		transporter: transporterCheck(broker),
		models: modelsCheck(broker, nodeID =>
			ctx.call<ProviderHealth[], Record<string, never>>("llm.health", {}, { nodeID, timeout: CHECK_TIMEOUT_MS, retries: 0 })
		)
	});
	return { status: ready ? "ready" : "not_ready", nodeID: broker.nodeID, checks };
}
