/**
 * chatmesh's process entry. `npm start` runs every service here on the embedded defaults; with
 * SERVICES and TRANSPORTER set the same entry runs one node of a NATS cluster.
 */
import { ConfigError, loadConfig, type ChatmeshConfig } from "./lib/config";
import { startNode, type ChatmeshNode } from "./node";

let config: ChatmeshConfig;
let node: ChatmeshNode;
try {
	config = loadConfig(process.env);
	node = await startNode(config);
} catch (err) {
	if (err instanceof ConfigError) {
		// One line naming the variable and the expected form; no stack, no value echoed back.
		process.stderr.write(`chatmesh: invalid configuration: ${err.message}\n`);
		process.exit(2);
	}
	process.stderr.write(`chatmesh: could not start: ${(err as Error).message}\n`);
	process.exit(1);
}

let signals = 0;
async function shutdown(signal: string) {
	signals += 1;
	// A second signal means "now": skip the grace period.
	if (signals > 1) process.exit(1);
	node.broker.logger.info(`${signal} received: shutting down (grace ${config.shutdownGraceMs} ms)`);
	const deadline = setTimeout(
		() => {
			node.broker.logger.error("Shutdown grace period over: exiting with work still open");
			process.exit(1);
		},
		config.shutdownUnreadyDelayMs + config.shutdownGraceMs + 5000
	);
	deadline.unref();
	try {
		await node.stop();
		process.exit(0);
	} catch (err) {
		node.broker.logger.error("Shutdown failed", err);
		process.exit(1);
	}
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
