/**
 * `npm run bench:startup`: start time and memory of one chatmesh node, from source through tsx
 * (`npm start`) against the production build (`node dist/server.js`, `npm run build` first).
 * Two nodes: the embedded one (every service, PGlite, simulator) and an llm node of a cluster over
 * NATS (BENCH_NATS_URL, default the local one). Each variant starts BENCH_RUNS times (default 7),
 * alternating, after one warm-up start that migrates its embedded database, so the numbers are
 * the loader's and not PGlite's first initdb. Start: spawn → the broker's "started successfully"
 * line, and the CPU time the process used until then. RSS: its resident set once its /ready
 * (HEALTH_PORT) is 200.
 * Prints a markdown table (medians, min–max) and one JSON line.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { baseEnv, cpuMs, REPO_ROOT, rssBytes, spawnNode } from "./lib/procs";
import { median, round } from "./lib/stats";
import { table } from "./lib/table";

const RUNS = Number(process.env.BENCH_RUNS ?? 7);
const NATS_URL = process.env.BENCH_NATS_URL ?? "nats://127.0.0.1:4222";

interface Variant {
	name: string;
	args: string[];
}

const VARIANTS: Variant[] = [
	{ name: "tsx", args: ["--import", "tsx", "server.ts"] },
	{ name: "built", args: ["dist/server.js"] }
];

interface Scenario {
	name: string;
	env(dataDir: string): Record<string, string>;
}

// The embedded node is dominated by PGlite (its WebAssembly PostgreSQL); the llm node of a
// cluster (no database) shows the loader's share more plainly.
const SCENARIOS: Scenario[] = [
	{ name: "embedded (every service, PGlite)", env: dataDir => ({ DATA_DIR: dataDir }) },
	{
		name: "llm node over NATS",
		env: dataDir => ({ DATA_DIR: dataDir, SERVICES: "llm", TRANSPORTER: NATS_URL, NAMESPACE: `bench-startup-${process.pid}` })
	}
];

interface Sample {
	startMs: number;
	/** CPU time the process spent to get there: unlike wall time, barely moved by other load on the machine. */
	cpuMs: number;
	rssMiB: number;
}

/** Spawn → the broker's "started successfully" line; RSS once the health listener's /ready is 200. */
async function once(variant: Variant, scenario: Scenario, dataDir: string): Promise<Sample> {
	const start = performance.now();
	const env = { ...baseEnv(), ...scenario.env(dataDir), PORT: "0", HEALTH_PORT: "0", LOG_LEVEL: "info" };
	const proc = spawnNode({ name: variant.name, args: variant.args, env, cwd: REPO_ROOT });
	try {
		await proc.waitFor(/ServiceBroker with \d+ service\(s\) started successfully/, 60_000);
		const startMs = performance.now() - start;
		const startCpuMs = cpuMs(proc.pid);
		const port = (await proc.waitFor(/Health listener on http:\/\/[^:]+:(\d+)/))[1];
		const deadline = Date.now() + 20_000;
		while ((await fetch(`http://127.0.0.1:${port}/ready`).catch(() => undefined))?.status !== 200) {
			if (Date.now() > deadline) throw new Error(`${variant.name}: /ready not 200 within 20 s`);
			await new Promise(r => setTimeout(r, 100));
		}
		return { startMs, cpuMs: startCpuMs, rssMiB: rssBytes(proc.pid) / 1024 / 1024 };
	} finally {
		await proc.stop(5000);
	}
}

if (!fs.existsSync(path.join(REPO_ROOT, "dist", "server.js"))) {
	process.stderr.write("bench:startup: dist/server.js is missing: run `npm run build` first\n");
	process.exit(2);
}

const range = (v: number[]) => `${round(Math.min(...v), 0)}–${round(Math.max(...v), 0)}`;
const rows: Array<[string, string, number, string, number, number, string]> = [];
const json: Record<string, Record<string, { startMs: number; cpuMs: number; rssMiB: number }>> = {};
for (const scenario of SCENARIOS) {
	const samples = new Map<string, Sample[]>(VARIANTS.map(v => [v.name, []]));
	const dirs = new Map(VARIANTS.map(v => [v.name, fs.mkdtempSync(path.join(os.tmpdir(), "chatmesh-startup-"))]));
	try {
		// Warm-up: creates and migrates each embedded database once.
		for (const variant of VARIANTS) await once(variant, scenario, dirs.get(variant.name) as string);
		// Alternating runs, so a change in the machine's load hits both variants alike.
		for (let i = 0; i < RUNS; i++)
			for (const variant of VARIANTS) {
				samples.get(variant.name)?.push(await once(variant, scenario, dirs.get(variant.name) as string));
				process.stderr.write(`${scenario.name} / ${variant.name}: run ${i + 1}/${RUNS}\n`);
			}
	} finally {
		for (const dir of dirs.values()) fs.rmSync(dir, { recursive: true, force: true });
	}
	json[scenario.name] = {};
	for (const variant of VARIANTS) {
		const list = samples.get(variant.name) ?? [];
		const start = list.map(s => s.startMs);
		const cpu = list.map(s => s.cpuMs);
		const rss = list.map(s => s.rssMiB);
		rows.push([scenario.name, variant.name, round(median(start), 0), range(start), round(median(cpu), 0), round(median(rss), 1), range(rss)]);
		json[scenario.name][variant.name] = { startMs: round(median(start), 0), cpuMs: round(median(cpu), 0), rssMiB: round(median(rss), 1) };
	}
}

process.stdout.write(
	`${table(
		`Start (spawn to broker started) and RSS once ready, median of ${RUNS} alternating runs (${os.cpus().length} CPUs, Node ${process.versions.node})`,
		["node", "run from", "start ms", "start range", "CPU ms to start", "RSS MiB", "RSS range"],
		rows
	)}\n`
);
process.stdout.write(`${JSON.stringify(json)}\n`);
