/**
 * Two gateway processes behind an imaginary load balancer, each with the user, conversation,
 * quota and moderation services, and one llm process answering from a simulator in the test
 * process; all on the real NATS, Redis and PostgreSQL under the test file's own namespace.
 * Resolves once both gateways are ready and have discovered each other (a broadcast reaches only
 * the nodes its sender knows).
 */
import type { Socket } from "socket.io-client";
import { startSimulator, type SimulatorHandle } from "../../simulator/simulator";
import { openSocket } from "./chat";
import { apiClient, type ApiClient } from "./http";
import { clusterEnv, createTestDatabase, uniqueNamespace, type TestDatabase } from "./infra";
import { simulatorProviders } from "./nodes";
import { spawnNode, waitUntil, type NodeProcess } from "./processes";

export interface PairedGateway {
	api: ApiClient;
	url: string;
	/** A socket.io connection on this gateway, closed by `stop()`. */
	socket(token: string): Promise<Socket>;
}

export interface GatewayPair {
	gw1: PairedGateway;
	gw2: PairedGateway;
	db: TestDatabase;
	sim: SimulatorHandle;
	procs: NodeProcess[];
	stop(): Promise<void>;
}

export async function startGatewayPair(label: string, env: Record<string, string> = {}): Promise<GatewayPair> {
	const sim = await startSimulator();
	const db = await createTestDatabase(label);
	const base = { ...clusterEnv(uniqueNamespace(label.replaceAll("_", "")), db.url), LLM_PROVIDERS: simulatorProviders(sim), ...env };
	const front = "gateway,user,conversation,quota,moderation";
	const [id1, id2] = [`${label}-gw-1`, `${label}-gw-2`];
	const a = spawnNode({ ...base, SERVICES: front, NODE_ID: id1 });
	const b = spawnNode({ ...base, SERVICES: front, NODE_ID: id2 });
	const procs = [a, b, spawnNode({ ...base, SERVICES: "llm", NODE_ID: `${label}-llm` })];
	const sockets: Socket[] = [];
	const gateway = (port: number): PairedGateway => {
		const url = `http://127.0.0.1:${port}`;
		return {
			url,
			api: apiClient(url),
			async socket(token) {
				const socket = await openSocket(url, token);
				sockets.push(socket);
				return socket;
			}
		};
	};
	const stop = async () => {
		for (const s of sockets) s.disconnect();
		for (const p of procs) p.kill("SIGKILL");
		await Promise.all(procs.map(p => p.exited));
		await sim.close();
		await db.drop();
	};
	try {
		const [gw1, gw2] = (await Promise.all([a.httpPort(), b.httpPort()])).map(gateway);
		for (const gw of [gw1, gw2]) await waitUntil(async () => (await gw.api.get("/ready")).status === 200, 30_000);
		await Promise.all([a.waitForOutput(new RegExp(`Node '${id2}' connected`)), b.waitForOutput(new RegExp(`Node '${id1}' connected`))]);
		return { gw1, gw2, db, sim, procs, stop };
	} catch (err) {
		await stop();
		throw err;
	}
}
