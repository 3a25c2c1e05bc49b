/**
 * docker-compose.yml run as local processes: every chatmesh service of the file started with
 * exactly the environment compose resolves for it, except what only names the container network
 * (hosts become 127.0.0.1, ports free local ones, the stores the test's own database, Redis
 * namespace and NATS namespace), in the file's depends_on order, each waited for with its own
 * healthcheck command; then Debian's nginx on the repo's nginx.conf pointed at the two gateways.
 */
import fs from "node:fs";
import path from "node:path";
import { freePort } from "../faults/deps";
import { createTestDatabase, TEST_NATS_URL, TEST_REDIS_URL, uniqueNamespace, type TestDatabase } from "../helpers/infra";
import { spawnNode, spawnProcess, type NodeProcess } from "../helpers/processes";
import { waitFor } from "../helpers/wait";
import { deleteJobStreams } from "../jobs/engine-jetstream";
import {
	chatmeshNodes,
	composeProject,
	filledEnvFile,
	NGINX_BIN,
	nginxPrefix,
	resolvedCompose,
	runCommand,
	type ComposeFile,
	type ComposeService,
	type NginxPrefix
} from "./compose";

export interface LocalService {
	name: string;
	proc: NodeProcess;
	/** The environment it was started with. */
	env: Record<string, string>;
	/** The compose environment's values this run replaced, and with what. */
	remapped: Record<string, { compose: string; local: string }>;
	/** Its gateway port (gateways) or the simulator's port. */
	httpPort?: number;
}

export interface Topology {
	file: ComposeFile;
	db: TestDatabase;
	namespace: string;
	services: Map<string, LocalService>;
	simulatorUrl: string;
	nginx: NodeProcess;
	nginxPrefix: NginxPrefix;
	/** http://127.0.0.1:<nginx port> */
	url: string;
	/** nginx's access log lines so far (log_format chatmesh). */
	accessLog(): string[];
	runHealthcheck(name: string): Promise<number>;
	stop(): Promise<void>;
}

function env(service: ComposeService): Record<string, string> {
	return Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, v ?? ""]));
}

/** The services a service waits for, in compose's order: a dependency first. */
function startOrder(file: ComposeFile, names: string[]): string[][] {
	const wanted = new Set(names);
	const waves: string[][] = [];
	const placed = new Set<string>();
	while (placed.size < wanted.size) {
		const wave = [...wanted].filter(
			name =>
				!placed.has(name) &&
				Object.keys(file.services[name].depends_on ?? {})
					.filter(dep => wanted.has(dep))
					.every(dep => placed.has(dep))
		);
		if (wave.length === 0) throw new Error("depends_on has a cycle");
		for (const name of wave) placed.add(name);
		waves.push(wave);
	}
	return waves;
}

export async function startTopology(label: string): Promise<Topology> {
	const file = await resolvedCompose(composeProject(filledEnvFile()));
	const db = await createTestDatabase(label);
	const namespace = uniqueNamespace(label);
	const services = new Map<string, LocalService>();
	const procs: NodeProcess[] = [];
	let nginx: NodeProcess | undefined;
	const stop = async () => {
		nginx?.kill("SIGKILL");
		for (const p of procs) p.kill("SIGKILL");
		await Promise.all([nginx?.exited, ...procs.map(p => p.exited)]);
		await db.drop().catch(() => {});
		// The jobs workers' JetStream streams stay on the shared NATS unless removed.
		await deleteJobStreams(namespace).catch(() => {});
	};

	try {
		// The simulator: the file's command, run from source instead of the image's dist/.
		const sim = file.services.simulator;
		const simCommand = sim.command as string[];
		if (simCommand[0] !== "node" || simCommand[1] !== "dist/simulator.js") throw new Error(`unexpected simulator command ${simCommand.join(" ")}`);
		const simPort = await freePort();
		const simArgs = simCommand.slice(2).map((arg, i, all) => (all[i - 1] === "--port" ? String(simPort) : all[i - 1] === "--host" ? "127.0.0.1" : arg));
		const simulator = spawnProcess({ command: [process.execPath, "--import", "tsx", "simulator/main.ts", ...simArgs] });
		procs.push(simulator);
		services.set("simulator", { name: "simulator", proc: simulator, env: {}, remapped: {}, httpPort: simPort });
		const simulatorUrl = `http://127.0.0.1:${simPort}`;

		// What names the container network, and where it is here.
		const hosts: Record<string, string> = { "simulator:8100": `127.0.0.1:${simPort}` };
		const gatewayAddresses: Record<string, string> = {};
		const plans = new Map<string, LocalService>();
		for (const name of chatmeshNodes(file)) {
			const composeEnv = env(file.services[name]);
			const local = { ...composeEnv };
			const remapped: LocalService["remapped"] = {};
			const replace = (key: string, value: string) => {
				remapped[key] = { compose: composeEnv[key], local: value };
				local[key] = value;
			};
			const expectValue = (key: string, pattern: RegExp) => {
				if (!pattern.test(composeEnv[key] ?? "")) throw new Error(`${name}: ${key}=${composeEnv[key]} is not the compose network's (${pattern})`);
			};
			if (composeEnv.DATABASE_URL !== undefined) {
				expectValue("DATABASE_URL", /^postgres:\/\/chatmesh:[0-9a-f]+@postgres:5432\/chatmesh$/);
				replace("DATABASE_URL", db.url);
			}
			if (composeEnv.REDIS_URL !== undefined) {
				expectValue("REDIS_URL", /^redis:\/\/:[0-9a-f]+@redis:6379\/0$/);
				replace("REDIS_URL", TEST_REDIS_URL);
			}
			expectValue("TRANSPORTER", /^nats:\/\/nats:4222$/);
			replace("TRANSPORTER", TEST_NATS_URL);
			// The shared Redis and NATS: the namespace keeps this run's keys and subjects apart.
			replace("NAMESPACE", namespace);
			if (composeEnv.LLM_PROVIDERS) {
				let providers = composeEnv.LLM_PROVIDERS;
				for (const [from, to] of Object.entries(hosts)) providers = providers.replaceAll(`//${from}/`, `//${to}/`);
				if (providers === composeEnv.LLM_PROVIDERS) throw new Error(`${name}: LLM_PROVIDERS names no compose service`);
				replace("LLM_PROVIDERS", providers);
			}
			for (const key of ["HOST", "METRICS_HOST"]) if (composeEnv[key]) replace(key, "127.0.0.1");
			for (const key of ["PORT", "HEALTH_PORT", "METRICS_PORT"]) if (composeEnv[key]) replace(key, String(await freePort()));
			const plan: LocalService = { name, proc: undefined as unknown as NodeProcess, env: local, remapped };
			if (composeEnv.SERVICES === "gateway") {
				plan.httpPort = Number(local.PORT);
				gatewayAddresses[`${name}:${composeEnv.PORT}`] = `127.0.0.1:${local.PORT}`;
			}
			plans.set(name, plan);
		}

		const runHealthcheck = async (name: string): Promise<number> => {
			const test = file.services[name].healthcheck?.test as string[];
			if (test[0] !== "CMD" || test[1] !== "node") throw new Error(`${name}: healthcheck ${test.join(" ")} is not a node command`);
			// The command as compose runs it in the container, with the container's environment.
			const probeEnv = name === "simulator" ? {} : (plans.get(name)?.env ?? {});
			const script = test[3].replace("127.0.0.1:8100", `127.0.0.1:${simPort}`);
			return (await runCommand(process.execPath, [test[2], script], { timeoutMs: 10_000, env: probeEnv })).code;
		};
		/** Up as compose sees it: its healthcheck passes. */
		const healthy = async (name: string) => {
			const service = services.get(name);
			await waitFor(
				async () => {
					if (service && (service.proc.proc.exitCode !== null || service.proc.proc.signalCode !== null))
						throw new Error(`${name} exited:\n${service.proc.output().slice(-3000)}`);
					return (await runHealthcheck(name)) === 0;
				},
				{ timeoutMs: 90_000, intervalMs: 500, what: `${name} healthy` }
			).catch(err => {
				throw new Error(`${(err as Error).message}\n${service?.proc.output().slice(-3000) ?? ""}`);
			});
		};
		await healthy("simulator");

		for (const wave of startOrder(file, [...plans.keys()])) {
			for (const name of wave) {
				const plan = plans.get(name) as LocalService;
				plan.proc = spawnNode(plan.env);
				procs.push(plan.proc);
				services.set(name, plan);
			}
			await Promise.all(wave.map(healthy));
		}

		// nginx: the repo's configuration, the gateways at their local ports, a free port to listen on.
		const nginxPort = await freePort();
		const prefix = nginxPrefix(gatewayAddresses, nginxPort);
		const accessLogFile = path.join(prefix.dir, "access.log");
		// nginx logs to /dev/stdout, which must be a file here (Node's pipes are sockets nginx cannot reopen).
		nginx = spawnProcess({
			command: ["/bin/sh", "-c", `exec ${NGINX_BIN} -p ${prefix.dir}/ -c ${prefix.conf} -g 'daemon off;' >>${accessLogFile}`],
			group: true
		});
		const url = `http://127.0.0.1:${nginxPort}`;
		const started = nginx;
		await waitFor(async () => (await fetch(`${url}/nginx-health`)).ok, { timeoutMs: 10_000, what: `nginx on ${url}` }).catch(err => {
			throw new Error(`${(err as Error).message}\n${started.output()}`);
		});

		return {
			file,
			db,
			namespace,
			services,
			simulatorUrl,
			nginx,
			nginxPrefix: prefix,
			url,
			accessLog: () => (fs.existsSync(accessLogFile) ? fs.readFileSync(accessLogFile, "utf8").split("\n").filter(Boolean) : []),
			runHealthcheck,
			stop
		};
	} catch (err) {
		await stop();
		throw err;
	}
}
