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
import { attachRuntime, NODE_STOPPING_EVENT, type Runtime } from "./lib/runtime";
import { resolveJwtSecret } from "./lib/secrets";

export interface ChatmeshNode {
	broker: ServiceBroker;
	runtime: Runtime;
	/** The in-process simulator, when this node runs llm with no providers configured. */
	simulator?: SimulatorHandle;
	/** The gateway's bound HTTP port, when this node runs the gateway. */
	httpPort?: number;
	/** Stops accepting work, lets in-flight work finish within the grace period, closes connections. */
	stop(): Promise<void>;
}

export async function startNode(config: ChatmeshConfig): Promise<ChatmeshNode> {
	assertNodeConfig(config);
	const broker = new ServiceBroker(brokerOptions(config));
	const logger = broker.getLogger("node");
	const opened: { database?: Database; simulator?: SimulatorHandle; generations?: GenerationLog } = {};
	const closeOpened = async () => {
		await opened.generations?.close().catch((err: unknown) => logger.warn("Generation log close failed", err));
		await opened.database?.close().catch((err: unknown) => logger.warn("Database close failed", err));
		await opened.simulator?.close().catch((err: unknown) => logger.warn("Simulator close failed", err));
	};

	try {
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

		const runtime: Runtime = {
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
			stop() {
				stopping ??= (async () => {
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
