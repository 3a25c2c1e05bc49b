/**
 * What a benchmark runs against: the simulator as its own process, chatmesh as one embedded
 * process (PGlite, memory) or as a three-process cluster over NATS with PostgreSQL and Redis, and
 * users signed up on it. Every process is pinned (see procs.ts) and stopped by pid.
 */
import crypto from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import pg from "pg";
import { baseEnv, REPO_ROOT, sleep, spawnNode, type Proc } from "./procs";

const POSTGRES_URL = process.env.BENCH_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test";
export const REDIS_URL = process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379/0";
const NATS_URL = process.env.BENCH_NATS_URL ?? "nats://127.0.0.1:4222";
export const MODELS = ["sim-small", "sim-medium", "sim-large"];

export interface SimulatorKnobs {
	ttftMs: number;
	tokenIntervalMs: number;
	outputTokens: number;
}

export interface Simulator {
	proc: Proc;
	url: string;
	configure(knobs: Partial<SimulatorKnobs>): Promise<void>;
	stop(): Promise<void>;
}

export async function startSimulator(knobs: SimulatorKnobs, cpu: string): Promise<Simulator> {
	const proc = spawnNode({
		name: "simulator",
		cpu,
		cwd: REPO_ROOT,
		env: baseEnv(),
		args: [
			"--import",
			"tsx",
			"simulator/main.ts",
			"--port",
			"0",
			"--ttft-ms",
			String(knobs.ttftMs),
			"--token-interval-ms",
			String(knobs.tokenIntervalMs),
			"--output-tokens",
			String(knobs.outputTokens)
		]
	});
	const [, url] = await proc.waitFor(/listening on (http:\/\/[\d.]+:\d+)/, 30_000);
	return {
		proc,
		url,
		async configure(partial) {
			const res = await fetch(`${url}/_simulator/config`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(partial) });
			if (!res.ok) throw new Error(`simulator config: HTTP ${res.status} ${await res.text()}`);
		},
		stop: () => proc.stop(1000)
	};
}

export async function freePort(): Promise<number> {
	return new Promise((resolve, reject) => {
		const server = net.createServer();
		server.once("error", reject);
		server.listen(0, "127.0.0.1", () => {
			const { port } = server.address() as net.AddressInfo;
			server.close(() => resolve(port));
		});
	});
}

const UNLIMITED = { points: 1_000_000_000, durationS: 60 };

export interface TopologyOptions {
	simulatorUrl: string;
	/** CPU list every chatmesh process is pinned to. */
	cpu: string;
	/** Extra node arguments before the entry (e.g. --inspect). */
	nodeArgs?: string[];
	extraEnv?: Record<string, string>;
	/** Prometheus metrics on (METRICS_PORT set); default: on unless BENCH_METRICS=0. */
	metrics?: boolean;
	/** Embedded only: the database, PGlite in a fresh DATA_DIR (default) or a fresh PostgreSQL database. */
	database?: "pglite" | "postgres";
}

/** The environment every chatmesh process of a benchmark shares. */
async function commonEnv(opts: TopologyOptions, jwtSecret: string): Promise<Record<string, string>> {
	return {
		...baseEnv(),
		NODE_ENV: "production",
		LOG_LEVEL: "warn",
		LOG_FORMAT: "json",
		HOST: "127.0.0.1",
		JWT_SECRET: jwtSecret,
		LLM_PROVIDERS: JSON.stringify([{ name: "sim", baseURL: `${opts.simulatorUrl}/v1`, models: MODELS }]),
		// Limits raised so they never refuse, but still consulted on every request and event.
		RATE_LIMITS: JSON.stringify({
			perUser: { chat: UNLIMITED, auth: UNLIMITED, default: UNLIMITED },
			perIp: { chat: UNLIMITED, auth: UNLIMITED, default: UNLIMITED }
		}),
		QUOTA_DEFAULT_TOKENS: String(1e12),
		// The simulator is a GPU pool without limit, like the direct runs see it: the llm node's gate
		// (default 64 generations) would otherwise cap 256 streams at 64 / 0.37 s ≈ 173 streams/s.
		LLM_CONCURRENCY: "1024",
		// Metrics on (BENCH_METRICS=0 turns them off, to measure what they cost).
		...((opts.metrics ?? process.env.BENCH_METRICS !== "0") ? { METRICS_PORT: String(await freePort()) } : {}),
		...opts.extraEnv
	};
}

export interface Topology {
	kind: "embedded" | "cluster";
	url: string;
	/** The chatmesh processes, named by role. */
	procs: Proc[];
	/** The gateway process (where sockets and HTTP land). */
	gateway: Proc;
	databaseUrl?: string;
	stop(): Promise<void>;
}

/** Polls `/ready` (logs are at warn, so the "listening" line is not printed) while the processes live. */
async function waitReady(url: string, procs: Proc[], timeoutMs: number): Promise<void> {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		const status = await fetch(`${url}/ready`).then(
			r => r.status,
			() => 0
		);
		if (status === 200) return;
		const dead = procs.find(p => p.child.exitCode !== null || p.child.signalCode !== null);
		if (dead) throw new Error(`${dead.name} exited during start-up:\n${dead.output().slice(-4000)}`);
		if (Date.now() > deadline) throw new Error(`${url}/ready not 200 within ${timeoutMs} ms (last ${status})`);
		await sleep(200);
	}
}

function entry(opts: TopologyOptions): string[] {
	return [...(opts.nodeArgs ?? []), "--import", "tsx", "server.ts"];
}

/**
 * One process with every service on the embedded defaults (PGlite in a fresh DATA_DIR, memory
 * cacher), or with a fresh PostgreSQL database of its own instead of PGlite (`database: "postgres"`).
 */
export async function startEmbedded(opts: TopologyOptions): Promise<Topology> {
	const dataDir = mkdtempSync(path.join(os.tmpdir(), "chatmesh-bench-"));
	const dbName = opts.database === "postgres" ? `chatmesh_bench_${crypto.randomBytes(4).toString("hex")}` : undefined;
	const port = await freePort();
	const env: Record<string, string> = { ...(await commonEnv(opts, crypto.randomBytes(36).toString("base64url"))), DATA_DIR: dataDir, PORT: String(port) };
	if (dbName) {
		await adminQuery(`CREATE DATABASE ${dbName}`);
		const dbUrl = new URL(POSTGRES_URL);
		dbUrl.pathname = `/${dbName}`;
		env.DATABASE_URL = dbUrl.toString();
	}
	const cleanup = async () => {
		rmSync(dataDir, { recursive: true, force: true });
		if (dbName) await adminQuery(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => {});
	};
	const proc = spawnNode({ name: "embedded", cpu: opts.cpu, env, args: entry(opts) });
	try {
		const url = `http://127.0.0.1:${port}`;
		await waitReady(url, [proc], 90_000);
		return {
			kind: "embedded",
			url,
			procs: [proc],
			gateway: proc,
			...(env.DATABASE_URL ? { databaseUrl: env.DATABASE_URL } : {}),
			async stop() {
				await proc.stop(0);
				await cleanup();
			}
		};
	} catch (err) {
		await proc.stop(0);
		await cleanup();
		throw err;
	}
}

/** Removes every Redis key of a namespace (bounded SCAN). */
async function dropRedisKeys(namespace: string): Promise<void> {
	const redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
	try {
		await redis.connect();
		let cursor = "0";
		for (let round = 0; round < 10_000; round++) {
			const [next, keys] = await redis.scan(cursor, "MATCH", `${namespace}*`, "COUNT", 1000);
			if (keys.length) await redis.unlink(...keys);
			cursor = next;
			if (cursor === "0") break;
		}
	} finally {
		redis.disconnect();
	}
}

async function adminQuery(sql: string): Promise<void> {
	const client = new pg.Client({ connectionString: POSTGRES_URL });
	await client.connect();
	try {
		await client.query(sql);
	} finally {
		await client.end();
	}
}

/**
 * Three processes over NATS, with a fresh PostgreSQL database and a namespace of their own in
 * Redis: gateway+user+quota+moderation, conversation, llm.
 */
export async function startCluster(opts: TopologyOptions): Promise<Topology> {
	const suffix = crypto.randomBytes(4).toString("hex");
	const dbName = `chatmesh_bench_${suffix}`;
	const namespace = `bench-${suffix}`;
	await adminQuery(`CREATE DATABASE ${dbName}`);
	const dbUrl = new URL(POSTGRES_URL);
	dbUrl.pathname = `/${dbName}`;
	const common = {
		...(await commonEnv(opts, crypto.randomBytes(36).toString("base64url"))),
		NAMESPACE: namespace,
		TRANSPORTER: NATS_URL,
		DATABASE_URL: dbUrl.toString(),
		REDIS_URL: REDIS_URL
	};
	const roles: Array<[name: string, services: string]> = [
		["gateway", "gateway,user,quota,moderation"],
		["conversation", "conversation"],
		["llm", "llm"]
	];
	const procs: Proc[] = [];
	const cleanup = async () => {
		await Promise.all(procs.map(p => p.stop(0)));
		await adminQuery(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`).catch(() => {});
		await dropRedisKeys(namespace).catch(() => {});
	};
	try {
		const port = await freePort();
		for (const [name, services] of roles) {
			const env: Record<string, string> = { ...common, SERVICES: services, NODE_ID: `${namespace}-${name}`, PORT: String(port) };
			if (env.METRICS_PORT) env.METRICS_PORT = String(await freePort());
			procs.push(spawnNode({ name, cpu: opts.cpu, env, args: entry(opts) }));
		}
		const url = `http://127.0.0.1:${port}`;
		// Ready means the gateway reaches the database, the cacher, NATS and a model through the llm node.
		await waitReady(url, procs, 90_000);
		await waitForService(url, "conversation", 30_000);
		return { kind: "cluster", url, procs, gateway: procs[0], databaseUrl: dbUrl.toString(), stop: cleanup };
	} catch (err) {
		await cleanup();
		throw err;
	}
}

/** Polls until an action of `service` answers through the gateway (a 401/200 instead of 404/503). */
async function waitForService(url: string, service: "conversation", timeoutMs: number): Promise<void> {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		// Unauthenticated: 401 once the route's action exists on some node, 503/404 while it does not.
		const status = await fetch(`${url}/api/conversations`).then(
			r => r.status,
			() => 0
		);
		if (status === 401) return;
		if (Date.now() > deadline) throw new Error(`${service} not reachable within ${timeoutMs} ms (last ${status})`);
		await sleep(200);
	}
}

export interface BenchUser {
	accessToken: string;
	apiKey: string;
}

async function postJson(url: string, body: unknown, token?: string): Promise<{ status: number; body: Record<string, unknown> }> {
	const res = await fetch(url, {
		method: "POST",
		headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
		body: JSON.stringify(body)
	});
	return { status: res.status, body: (await res.json().catch(() => ({}))) as Record<string, unknown> };
}

/** Signs up `count` users (a few at a time: each hashes a password) and gives each an API key. */
export async function signUpUsers(baseUrl: string, count: number, parallel = 4): Promise<BenchUser[]> {
	const users: BenchUser[] = [];
	const run = crypto.randomBytes(3).toString("hex");
	let next = 0;
	await Promise.all(
		Array.from({ length: parallel }, async () => {
			while (next < count) {
				const i = next++;
				const reg = await postJson(`${baseUrl}/api/auth/register`, { email: `bench-${run}-${i}@example.test`, password: `bench password ${run} ${i}` });
				if (reg.status !== 201) throw new Error(`sign-up failed: ${reg.status} ${JSON.stringify(reg.body)}`);
				const accessToken = reg.body.accessToken as string;
				const key = await postJson(`${baseUrl}/api/keys`, { name: "bench" }, accessToken);
				if (key.status !== 201) throw new Error(`API key failed: ${key.status} ${JSON.stringify(key.body)}`);
				users.push({ accessToken, apiKey: key.body.key as string });
			}
		})
	);
	return users;
}

/** Rows in `messages` (cluster: PostgreSQL). */
export async function countMessages(databaseUrl: string): Promise<number> {
	const client = new pg.Client({ connectionString: databaseUrl });
	await client.connect();
	try {
		const { rows } = await client.query<{ n: string }>("SELECT count(*) AS n FROM messages");
		return Number(rows[0].n);
	} finally {
		await client.end();
	}
}
