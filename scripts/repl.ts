/**
 * `npm run repl`: moleculer-repl on a service-less node that joins the running cluster through
 * the configured transporter, so `nodes`, `services`, `actions` and `call` reach every node.
 */
import os from "node:os";
import { ServiceBroker } from "moleculer";
import { brokerOptions } from "../moleculer.config";
import { type ChatmeshConfig, ConfigError, loadConfig } from "../lib/config";

let config: ChatmeshConfig;
try {
	config = loadConfig(process.env);
} catch (err) {
	if (!(err instanceof ConfigError)) throw err;
	process.stderr.write(`chatmesh repl: invalid configuration: ${err.message}\n`);
	process.exit(2);
}
if (config.transporter.length === 0) {
	process.stderr.write(
		"chatmesh repl: TRANSPORTER is not set. The REPL attaches to a running cluster over NATS; " +
			"start the nodes and this REPL with the same TRANSPORTER and NAMESPACE.\n"
	);
	process.exit(2);
}

const broker = new ServiceBroker({
	...brokerOptions({ ...config, logLevel: config.logLevel === "info" ? "warn" : config.logLevel }),
	nodeID: `repl-${os.hostname()}-${process.pid}`,
	cacher: undefined,
	// The REPL handles its own exit.
	skipProcessEventRegistration: false
});
await broker.start();

// Other nodes answer the discovery broadcast within moments; wait briefly so the first
// `nodes` command already lists them.
const deadline = Date.now() + 3000;
while (Date.now() < deadline && broker.registry.nodes.list({ onlyAvailable: true, withServices: false }).length < 2) await new Promise(r => setTimeout(r, 100));

broker.repl();
