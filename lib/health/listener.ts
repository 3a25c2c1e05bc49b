/**
 * The health listener of a node (HEALTH_PORT): `GET /health` answers while the process is alive,
 * `GET /ready` says whether this node can do its work: not stopping, started, its database when it
 * uses one, its transporter, and for an llm node at least one model endpoint of its own. Nodes
 * without the gateway have no other HTTP face for probes; the gateway keeps /health and
 * /ready on PORT. Plain node:http: the listener must answer while the broker starts and stops.
 */
import http from "node:http";
import type { ServiceBroker } from "moleculer";
import type { ProviderHealth } from "../../services/llm/llm.service";
import type { Runtime } from "../runtime";
import { CHECK_TIMEOUT_MS, databaseCheck, modelsCheck, notStoppingCheck, runChecks, transporterCheck, type Check, type CheckResult } from "./checks";

export const HEALTH_PATH = "/health";
export const READY_PATH = "/ready";

export interface NodeHealth {
	status: "ok";
	nodeID: string;
	uptimeS: number;
}

export interface NodeReadiness {
	status: "ready" | "not_ready";
	nodeID: string;
	checks: Record<string, CheckResult>;
}

export interface HealthListener {
	port: number;
	close(): Promise<void>;
}

/** The checks of this node: what it runs decides what it depends on. */
export async function checkNodeReadiness(broker: ServiceBroker, runtime: Runtime | undefined): Promise<NodeReadiness> {
	const checks: Record<string, Check> = {
		lifecycle: async () => {
			await notStoppingCheck(broker)();
			// broker.started turns true once every local service has started.
			if (!runtime || !(broker as ServiceBroker & { started?: boolean }).started) throw new Error("node is starting");
			return "running";
		},
		transporter: transporterCheck(broker)
	};
	if (runtime?.database) checks.database = databaseCheck(runtime);
	if (runtime?.config.services.includes("llm"))
		// This node's own endpoints: another node serving a model does not make this one useful.
		checks.models = modelsCheck(
			broker,
			nodeID => broker.call<ProviderHealth[], Record<string, never>>("llm.health", {}, { nodeID, timeout: CHECK_TIMEOUT_MS, retries: 0 }),
			[broker.nodeID]
		);
	const { ready, checks: results } = await runChecks(checks);
	return { status: ready ? "ready" : "not_ready", nodeID: broker.nodeID, checks: results };
}

function reply(res: http.ServerResponse, status: number, body: unknown): void {
	res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store" });
	res.end(JSON.stringify(body));
}

/**
 * Starts listening on host:port. `runtime` is read on every /ready, so the listener can start
 * before the node's database and services exist and report "starting" until they do.
 */
export async function startHealthListener(opts: {
	broker: ServiceBroker;
	runtime: () => Runtime | undefined;
	host: string;
	port: number;
}): Promise<HealthListener> {
	const { broker } = opts;
	const server = http.createServer((req, res) => {
		const path = (req.url ?? "/").split("?")[0];
		if (req.method !== "GET" && req.method !== "HEAD") return reply(res, 405, { error: "method not allowed" });
		if (path === HEALTH_PATH) return reply(res, 200, { status: "ok", nodeID: broker.nodeID, uptimeS: Math.round(process.uptime()) } satisfies NodeHealth);
		if (path === READY_PATH) {
			checkNodeReadiness(broker, opts.runtime()).then(
				readiness => reply(res, readiness.status === "ready" ? 200 : 503, readiness),
				(err: Error) => reply(res, 503, { status: "not_ready", nodeID: broker.nodeID, error: err.message })
			);
			return;
		}
		reply(res, 404, { error: "not found", paths: [HEALTH_PATH, READY_PATH] });
	});
	// Probes hold no connection open for long; a stuck one must not keep the process alive.
	server.keepAliveTimeout = 5000;
	server.requestTimeout = 10_000;
	await new Promise<void>((resolve, reject) => {
		server.once("error", reject);
		server.listen(opts.port, opts.host, () => {
			server.off("error", reject);
			resolve();
		});
	});
	const address = server.address();
	const port = typeof address === "object" && address ? address.port : opts.port;
	return {
		port,
		close: () =>
			new Promise<void>(resolve => {
				server.close(() => resolve());
				server.closeAllConnections();
			})
	};
}
