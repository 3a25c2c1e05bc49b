/**
 * The lifecycle a test file repeats, registered once: a simulator, a store (a test database on
 * the real PostgreSQL and Redis, or an embedded data directory), a chatmesh node with relaxed rate
 * limits, and spawned node processes; all stopped in afterAll, in reverse order.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type pg from "pg";
import type { Socket } from "socket.io-client";
import { afterAll, beforeAll, beforeEach } from "vitest";
import type { ChatmeshNode } from "../../node";
import { startSimulator, type SimulatorHandle, type SimulatorOptions } from "../../simulator/simulator";
import { apiClient, type ApiClient } from "./http";
import { clusterEnv, createTestDatabase, queryDb, TEST_JWT_SECRET, TEST_REDIS_URL, uniqueNamespace, type TestDatabase } from "./infra";
import { simulatorProviders, startTestNode } from "./nodes";
import { spawnNode, type NodeProcess } from "./processes";

export type TestNode = ChatmeshNode & { baseUrl: string };

type Rule = { points: number; durationS: number };
export type RateLimits = { perUser?: Record<string, Rule>; perIp?: Record<string, Rule> };

const roomy: Rule = { points: 10_000, durationS: 60 };
/** Limits no test reaches by accident: files that test identity or chat, not rate limiting. */
export const RELAXED_RATE_LIMITS: RateLimits = {
	perUser: { chat: roomy, default: roomy, auth: roomy },
	perIp: { chat: roomy, default: roomy, auth: roomy }
};

/** The relaxed limits with some rules replaced (e.g. a small chat limit a test runs into). */
export function relaxedRateLimits(overrides: RateLimits = {}): string {
	return JSON.stringify({
		perUser: { ...RELAXED_RATE_LIMITS.perUser, ...overrides.perUser },
		perIp: { ...RELAXED_RATE_LIMITS.perIp, ...overrides.perIp }
	});
}

export interface ChatNodeOptions {
	/** Names the namespace and the database. */
	label: string;
	/** Start a simulator with these options (and point LLM_PROVIDERS at it); false: none. */
	simulator?: Partial<SimulatorOptions> | false;
	/** Models the simulator provider serves. */
	models?: string[];
	/** "postgres": a fresh test database on the real PostgreSQL and Redis; "embedded": PGlite and memory in a temporary directory. */
	store?: "postgres" | "embedded";
	/** Join the test NATS, as a clustered node does. */
	nats?: boolean;
	/** RATE_LIMITS as JSON; default: the relaxed limits. */
	rateLimits?: string;
	/** Reset the simulator to its start options before each test. */
	resetSimulator?: boolean;
	/** More environment (after the simulator started, so it may ask it something). */
	env?: Record<string, string> | ((fixture: ChatNodeFixture) => Promise<Record<string, string>> | Record<string, string>);
	/** Runs once the node is up (extra services, a browser). */
	started?: (fixture: ChatNodeFixture) => Promise<void> | void;
	/** Runs first in afterAll, before the node stops. */
	stopping?: (fixture: ChatNodeFixture) => Promise<void> | void;
	timeoutMs?: number;
}

export interface ChatNodeFixture {
	sim: SimulatorHandle;
	/** Set with store "postgres". */
	db: TestDatabase;
	node: TestNode;
	api: ApiClient;
	/** Sockets a test opens; disconnected in afterAll. */
	sockets: Socket[];
	/** One query on the node's database, whichever the store. */
	sql<T extends pg.QueryResultRow = pg.QueryResultRow>(text: string, params?: unknown[]): Promise<T[]>;
}

/** Registers beforeAll/afterAll for a simulator, a store and a node; the fixture is filled once beforeAll ran. */
export function withChatNode(options: ChatNodeOptions): ChatNodeFixture {
	const { label, store = "postgres", simulator = {}, timeoutMs = 60_000 } = options;
	const cleanups = new Cleanups();
	let databaseUrl = "";
	const fixture = {
		sockets: [] as Socket[],
		sql: <T extends pg.QueryResultRow>(text: string, params: unknown[] = []) =>
			queryDb<T>(databaseUrl || (fixture.node.runtime.database?.url ?? ""), text, params)
	} as ChatNodeFixture;

	beforeAll(async () => {
		const env: Record<string, string> = {
			NAMESPACE: uniqueNamespace(label),
			JWT_SECRET: TEST_JWT_SECRET,
			RATE_LIMITS: options.rateLimits ?? relaxedRateLimits()
		};
		if (simulator) {
			fixture.sim = await startTestSimulator(simulator, cleanups);
			env.LLM_PROVIDERS = simulatorProviders(fixture.sim, options.models);
		}
		if (store === "postgres") {
			fixture.db = await startTestDatabase(label, cleanups);
			databaseUrl = fixture.db.url;
			Object.assign(env, options.nats ? clusterEnv(env.NAMESPACE, databaseUrl) : { DATABASE_URL: databaseUrl, REDIS_URL: TEST_REDIS_URL });
		} else {
			env.DATA_DIR = await makeDataDir(label, cleanups);
		}
		Object.assign(env, typeof options.env === "function" ? await options.env(fixture) : options.env);
		fixture.node = await startTestNode(env);
		cleanups.add(() => fixture.node.stop());
		cleanups.add(() => {
			for (const socket of fixture.sockets) socket.disconnect();
		});
		fixture.api = apiClient(fixture.node.baseUrl);
		if (options.stopping) cleanups.add(() => options.stopping?.(fixture));
		await options.started?.(fixture);
	}, timeoutMs);

	afterAll(() => cleanups.run(), timeoutMs);

	if (options.resetSimulator) beforeEach(() => void fixture.sim.resetConfig());
	return fixture;
}

export interface ProcessClusterOptions {
	/** Names the test database and the temporary directory. */
	label: string;
	/** Create a test database (dropped after the processes are gone). */
	database?: boolean;
	/** Start a simulator the processes reach over HTTP. */
	simulator?: Partial<SimulatorOptions>;
	/** Make a temporary DATA_DIR (removed after the processes are gone). */
	dataDir?: boolean;
}

export interface ProcessCluster {
	/** Every process spawned so far (by spawn or pushed by the test); all killed in afterAll. */
	procs: NodeProcess[];
	spawn(env: Record<string, string>): NodeProcess;
	/** Set in beforeAll when asked for. */
	db: TestDatabase;
	sim: SimulatorHandle;
	dataDir: string;
}

/** Spawned chatmesh processes of one test file and what they share, all stopped (and awaited) in afterAll. */
export function withProcesses(options: ProcessClusterOptions): ProcessCluster {
	const cleanups = new Cleanups();
	const cluster = {
		procs: [] as NodeProcess[],
		spawn(env: Record<string, string>) {
			const proc = spawnNode(env);
			cluster.procs.push(proc);
			return proc;
		}
	} as ProcessCluster;
	beforeAll(async () => {
		if (options.simulator) cluster.sim = await startTestSimulator(options.simulator, cleanups);
		if (options.database) cluster.db = await startTestDatabase(options.label, cleanups);
		if (options.dataDir) cluster.dataDir = await makeDataDir(options.label, cleanups);
	});
	afterAll(async () => {
		for (const p of cluster.procs) p.kill("SIGKILL");
		await Promise.all(cluster.procs.map(p => p.exited));
		await cleanups.run();
	});
	return cluster;
}

/** Steps to undo, run in reverse order; a failed step does not keep the others from running. */
class Cleanups {
	private steps: Array<() => unknown> = [];

	add(step: () => unknown): void {
		this.steps.push(step);
	}

	async run(): Promise<void> {
		const failures: unknown[] = [];
		for (const step of this.steps.splice(0).reverse())
			await Promise.resolve()
				.then(step)
				.catch((err: unknown) => failures.push(err));
		if (failures.length) throw failures[0];
	}
}

async function startTestSimulator(options: Partial<SimulatorOptions>, cleanups: Cleanups): Promise<SimulatorHandle> {
	const sim = await startSimulator(options);
	cleanups.add(() => sim.close());
	return sim;
}

async function startTestDatabase(label: string, cleanups: Cleanups): Promise<TestDatabase> {
	const db = await createTestDatabase(label);
	cleanups.add(() => db.drop());
	return db;
}

async function makeDataDir(label: string, cleanups: Cleanups): Promise<string> {
	const dir = await fs.mkdtemp(path.join(os.tmpdir(), `chatmesh-${label}-`));
	cleanups.add(() => fs.rm(dir, { recursive: true, force: true }));
	return dir;
}
