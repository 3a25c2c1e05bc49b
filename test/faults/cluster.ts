/**
 * A chatmesh cluster for fault scenarios: private Redis, NATS and PostgreSQL, the inference
 * simulator as its own process (slow tokens, so answers are mid-stream when a fault hits), and
 * gateway / conversation / llm node processes with short heartbeats, two of each role.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { simulatorProviders } from "../helpers/nodes";
import { TEST_JWT_SECRET, uniqueNamespace } from "../helpers/infra";
import { spawnNode, spawnProcess, type NodeProcess } from "../helpers/processes";
import { startNats, startPostgres, startRedis, type Dependency } from "./deps";

export interface SimulatorKnobs {
	outputTokens: number;
	tokenIntervalMs: number;
	ttftMs: number;
}

/** Nodes of a fault cluster: gateways carry the front services, the rest one role each. */
export const ROLES = {
	gateway: "gateway,user,quota,moderation",
	conversation: "conversation,tool",
	llm: "llm"
} as const;
export type Role = keyof typeof ROLES;

export interface ClusterNode {
	id: string;
	role: Role;
	proc: NodeProcess;
	/** Set when the scenario killed it on purpose; any other exit is a crash. */
	killedOnPurpose: boolean;
	url?: string;
	/** Output of the processes that held this id before (a healed node is a new process). */
	before: string;
}

/** Configuration the nodes get: short heartbeats and provider timeouts, so faults show within a scenario. */
export const NODE_TIMINGS = {
	HEARTBEAT_INTERVAL_S: "1",
	HEARTBEAT_TIMEOUT_S: "3",
	LLM_FIRST_TOKEN_TIMEOUT_MS: "10000",
	LLM_IDLE_TIMEOUT_MS: "5000",
	REQUEST_TIMEOUT_MS: "10000"
};

export interface FaultCluster {
	redis: Dependency;
	nats: Dependency;
	postgres: Dependency;
	simulatorUrl: string;
	nodes: ClusterNode[];
	gatewayUrls(): string[];
	node(id: string): ClusterNode;
	/** SIGKILL one node and mark it as killed by the scenario. */
	killNode(id: string): void;
	/** Nodes that exited without the scenario killing them, with their exit code or signal. */
	crashed(): string[];
	/** Starts a new process for every node that has exited (same id and role), so the next scenario has the full cluster. */
	heal(): Promise<void>;
	stop(): Promise<void>;
}

export async function startCluster(label: string, knobs: SimulatorKnobs): Promise<FaultCluster> {
	const started = await Promise.allSettled([startRedis(), startNats(), startPostgres()]);
	const failed = started.find(r => r.status === "rejected");
	if (failed) {
		// The ones that did start must not outlive the failure.
		await Promise.all(started.map(r => (r.status === "fulfilled" ? r.value.dispose() : undefined)));
		throw failed.reason;
	}
	const [redis, nats, postgres] = started.map(r => (r as PromiseFulfilledResult<Dependency>).value);
	const procs: NodeProcess[] = [];
	const nodes: ClusterNode[] = [];
	const logDir = path.join(os.tmpdir(), "chatmesh-faults", label);
	const stop = async () => {
		for (const p of procs) p.kill("SIGKILL");
		await Promise.all(procs.map(p => p.exited));
		// Every process's output stays readable after the run: a failed scenario is explained there.
		fs.rmSync(logDir, { recursive: true, force: true });
		fs.mkdirSync(logDir, { recursive: true });
		for (const n of nodes) fs.writeFileSync(path.join(logDir, `${n.id}.log`), n.before + n.proc.output());
		for (const dep of [redis, nats, postgres]) fs.writeFileSync(path.join(logDir, `${dep.name}.log`), dep.output());
		await Promise.all([redis.dispose(), nats.dispose(), postgres.dispose()]);
	};
	try {
		const sim = spawnProcess({
			command: [
				process.execPath,
				"--import",
				"tsx",
				"simulator/main.ts",
				"--port",
				"0",
				"--output-tokens",
				String(knobs.outputTokens),
				"--token-interval-ms",
				String(knobs.tokenIntervalMs),
				"--ttft-ms",
				String(knobs.ttftMs)
			]
		});
		procs.push(sim);
		const simulatorUrl = (await sim.waitForOutput(/OpenAI base URL (\S+)\)/))[1];
		const env = {
			NAMESPACE: uniqueNamespace(`fault-${label}`),
			TRANSPORTER: nats.url,
			DATABASE_URL: postgres.url,
			REDIS_URL: redis.url,
			JWT_SECRET: TEST_JWT_SECRET,
			// info: the listening and started lines are how the harness knows a node is up.
			LOG_LEVEL: "info",
			LLM_PROVIDERS: simulatorProviders({ baseURL: simulatorUrl }),
			QUOTA_DEFAULT_TOKENS: "1000000000",
			RATE_LIMITS: JSON.stringify({
				perIp: { chat: { points: 100_000, durationS: 60 }, auth: { points: 10_000, durationS: 60 }, default: { points: 100_000, durationS: 60 } },
				perUser: { chat: { points: 100_000, durationS: 60 }, default: { points: 100_000, durationS: 60 } }
			}),
			...NODE_TIMINGS
		};
		const spawnRole = (role: Role, id: string, before = "") => {
			const proc = spawnNode({ ...env, SERVICES: ROLES[role], NODE_ID: id });
			procs.push(proc);
			const created: ClusterNode = { id, role, proc, killedOnPurpose: false, before };
			nodes.push(created);
			return created;
		};
		const up = async (n: ClusterNode) => {
			if (n.role === "gateway") n.url = `http://127.0.0.1:${await n.proc.httpPort(90_000)}`;
			await n.proc.waitForOutput(/ServiceBroker with \d+ service\(s\) started/i, 90_000);
		};
		// The first gateway migrates the database alone; the rest start once the schema is there.
		spawnRole("gateway", "gw-1");
		const gw1 = nodes[0];
		gw1.url = `http://127.0.0.1:${await gw1.proc.httpPort(60_000)}`;
		spawnRole("gateway", "gw-2");
		for (const id of ["conv-1", "conv-2"]) spawnRole("conversation", id);
		for (const id of ["llm-1", "llm-2"]) spawnRole("llm", id);
		await Promise.all(nodes.map(up));
		const node = (id: string) => {
			const found = nodes.find(n => n.id === id);
			if (!found) throw new Error(`no node ${id}`);
			return found;
		};
		return {
			redis,
			nats,
			postgres,
			simulatorUrl,
			nodes,
			gatewayUrls: () => nodes.filter(n => n.role === "gateway" && !n.killedOnPurpose).map(n => n.url as string),
			node,
			killNode(id) {
				const n = node(id);
				n.killedOnPurpose = true;
				n.proc.kill("SIGKILL");
			},
			crashed() {
				return nodes
					.filter(n => !n.killedOnPurpose && (n.proc.proc.exitCode !== null || n.proc.proc.signalCode !== null))
					.map(n => `${n.id} (${n.proc.proc.exitCode ?? n.proc.proc.signalCode})`);
			},
			async heal() {
				const gone = nodes.filter(n => n.proc.proc.exitCode !== null || n.proc.proc.signalCode !== null);
				for (const old of gone) nodes.splice(nodes.indexOf(old), 1);
				const fresh = gone.map(old => spawnRole(old.role, old.id, `${old.before}${old.proc.output()}\n--- restarted ---\n`));
				await Promise.all(fresh.map(up));
			},
			stop
		};
	} catch (err) {
		await stop();
		throw err;
	}
}
