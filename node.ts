/**
 * Starts one chatmesh node: the embedded parts it needs (PGlite, the inference simulator), the
 * migrated database, a broker with the configured services, and a stop() that closes everything
 * in order. `server.ts` runs it as the process entry; tests run it in-process.
 */
import { ServiceBroker } from "moleculer";
import { brokerOptions } from "./moleculer.config";
import { SERVICES } from "./services";
import { startSimulator, type SimulatorHandle } from "./simulator/simulator";
import { assertNodeConfig, GENERATION_SERVICES, needsDatabase, redactUrl, type ChatmeshConfig, type ProviderConfig } from "./lib/config";
import { openDatabase, type Database } from "./lib/db";
import { createGenerationLog } from "./lib/generations/create";
import type { GenerationLog } from "./lib/generations/log";
import { markStopping } from "./lib/health/checks";
import { startHealthListener, type HealthListener } from "./lib/health/listener";
import { attachRuntime, NODE_STOPPING_EVENT, type Runtime } from "./lib/runtime";
import { resolveJwtSecret } from "./lib/secrets";

export interface ChatmeshNode {
	broker: ServiceBroker;
	runtime: Runtime;
	/** The in-process simulator, when this node runs llm with no providers configured. */
	simulator?: SimulatorHandle;
	/** The gateway's bound HTTP port, when this node runs the gateway. */
	httpPort?: number;
	/** The health listener's bound port, when HEALTH_PORT is set. */
	healthPort?: number;
	/** Answers not ready, waits SHUTDOWN_UNREADY_DELAY_MS, then stops accepting work, lets in-flight work finish within the grace period, closes connections. */
	stop(): Promise<void>;
}

export async function startNode(config: ChatmeshConfig): Promise<ChatmeshNode> {
	assertNodeConfig(config);
	const broker = new ServiceBroker(brokerOptions(config));
	const logger = broker.getLogger("node");
	const opened: { database?: Database; simulator?: SimulatorHandle; generations?: GenerationLog; health?: HealthListener } = {};
	let runtime: Runtime | undefined;
	const closeOpened = async () => {
		await opened.generations?.close().catch((err: unknown) => logger.warn("Generation log close failed", err));
		await opened.database?.close().catch((err: unknown) => logger.warn("Database close failed", err));
		await opened.simulator?.close().catch((err: unknown) => logger.warn("Simulator close failed", err));
		// Last: probes get an answer (not ready) for as long as anything else is open.
		await opened.health?.close().catch((err: unknown) => logger.warn("Health listener close failed", err));
	};

	try {
		if (config.healthPort !== undefined) {
			// First, so a probe gets "starting" rather than a refused connection while the node starts.
			opened.health = await startHealthListener({ broker, runtime: () => runtime, host: config.host, port: config.healthPort });
			logger.info(`Health listener on http://${config.host}:${opened.health.port} (/health, /ready)`);
		}

		if (needsDatabase(config)) {
			opened.database = await openDatabase({
				url: config.databaseUrl,
				dataDir: config.dataDir,
				log: msg => logger.info(msg)
			});
			logger.info(`Database: ${opened.database.embedded ? `embedded PGlite under ${config.dataDir}` : redactUrl(opened.database.url)}`);
		}

		let providers: ProviderConfig[] = config.providers ?? [];
		if (!config.providers && config.services.includes("llm")) {
			opened.simulator = await startSimulator();
			providers = [{ name: "simulator", baseURL: opened.simulator.baseURL, models: [...opened.simulator.options.models] }];
			logger.info(`No LLM_PROVIDERS set: using the built-in inference simulator at ${opened.simulator.baseURL}`);
		}

		if (config.services.some(s => GENERATION_SERVICES.has(s)))
			opened.generations = createGenerationLog({
				keyPrefix: config.namespace,
				maxEvents: 20_000,
				ttlS: 3600,
				runningTtlS: 86_400,
				redis: config.redisUrl ? { url: config.redisUrl } : undefined,
				logger
			});

		runtime = {
			config,
			database: opened.database,
			providers,
			jwtSecret: await resolveJwtSecret(config),
			generations: opened.generations
		};
		attachRuntime(broker, runtime);
		for (const name of config.services) SERVICES[name].create(broker);
		await broker.start();

		const gateway = config.services.includes("gateway") ? broker.getLocalService("gateway") : undefined;
		const address = (gateway as unknown as { server?: { address(): { port: number } | string | null } })?.server?.address();
		const httpPort = typeof address === "object" && address ? address.port : undefined;
		if (httpPort !== undefined) logger.info(`chatmesh listening on http://${config.host}:${httpPort} (pid ${process.pid})`);

		let stopping: Promise<void> | undefined;
		return {
			broker,
			runtime,
			simulator: opened.simulator,
			httpPort,
			healthPort: opened.health?.port,
			stop() {
				stopping ??= (async () => {
					// Readiness goes false first (the gateway's /ready on PORT and the listener's /ready), and
					// stays so for the configured delay while balancers take the node out of rotation.
					markStopping(broker);
					if (config.shutdownUnreadyDelayMs > 0) {
						logger.info(`Not ready: draining in ${config.shutdownUnreadyDelayMs} ms`);
						await new Promise(resolve => setTimeout(resolve, config.shutdownUnreadyDelayMs));
					}
					// Long-lived client streams end first (clients resume on another node), so the
					// grace period goes to work in flight rather than to idle listeners.
					await broker.broadcastLocal(NODE_STOPPING_EVENT);
					await broker.stop();
					await closeOpened();
				})();
				return stopping;
			}
		};
	} catch (err) {
		await broker.stop().catch(() => {});
		await closeOpened();
		throw err;
	}
}
