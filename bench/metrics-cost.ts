/**
 * Part 4, what the Prometheus metrics cost: passthrough streams (`/v1/chat/completions` with an API
 * key) on two embedded nodes started side by side, one with METRICS_PORT and scraped every
 * `scrapeMs` as Prometheus would, one without metrics. Rounds alternate which node goes first; the
 * figure is the median CPU ms per stream of each node over the rounds, and their ratio.
 */
import { readdirSync, readFileSync } from "node:fs";
import { freePort, startEmbedded, type BenchUser, type Simulator, signUpUsers, type Topology } from "./lib/chatmesh";
import { openAiStream } from "./lib/clients";
import { runPoint, type PointLimits } from "./lib/load";
import { median } from "./lib/stats";

export interface MetricsCostConfig {
	rounds: number;
	concurrency: number;
	limits: PointLimits;
	scrapeMs: number;
	expectedChunks: number;
	cpu: string;
}

export interface MetricsCostResult {
	rounds: number;
	concurrency: number;
	scrapeMs: number;
	/** CPU ms per stream of the node, per round. */
	onMs: number[];
	offMs: number[];
	medianOnMs: number;
	medianOffMs: number;
	/** medianOn / medianOff. */
	ratio: number;
	/** The best round of each: the least disturbed by other load on the machine. */
	bestOnMs: number;
	bestOffMs: number;
	scrapes: number;
	errors: number;
}

/**
 * CPU time of every thread of a process, in ms, from the scheduler's nanosecond counters
 * (/proc/<pid>/task/<tid>/schedstat): a few percent is below the 10 ms tick of /proc/<pid>/stat
 * over a round of a few hundred milliseconds of CPU.
 */
function threadCpuMs(pid: number): number {
	let ns = 0;
	for (const tid of readdirSync(`/proc/${pid}/task`)) {
		try {
			ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
		} catch {
			// the thread ended meanwhile
		}
	}
	return ns / 1e6;
}

/** Streams on a node, its CPU per stream. */
async function measure(topo: Topology, users: BenchUser[], cfg: MetricsCostConfig): Promise<{ cpuMs: number; errors: number }> {
	const before = threadCpuMs(topo.gateway.pid);
	const point = await runPoint(cfg.concurrency, w => openAiStream(topo.url, users[w % users.length].apiKey), cfg.limits, cfg.expectedChunks);
	return { cpuMs: (threadCpuMs(topo.gateway.pid) - before) / Math.max(1, point.streams), errors: point.errors };
}

export async function measureMetricsCost(sim: Simulator, cfg: MetricsCostConfig, log: (msg: string) => void): Promise<MetricsCostResult> {
	const metricsPort = await freePort();
	const on = await startEmbedded({ simulatorUrl: sim.url, cpu: cfg.cpu, metrics: true, extraEnv: { METRICS_PORT: String(metricsPort) } });
	let off: Topology | undefined;
	let scrapes = 0;
	let scraping = true;
	const scraper = (async () => {
		while (scraping) {
			const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).catch(() => undefined);
			if (res?.ok) {
				await res.text();
				scrapes += 1;
			}
			await new Promise(resolve => setTimeout(resolve, cfg.scrapeMs));
		}
	})();
	try {
		off = await startEmbedded({ simulatorUrl: sim.url, cpu: cfg.cpu, metrics: false });
		const nodes = { on: { topo: on, users: await signUpUsers(on.url, 8) }, off: { topo: off, users: await signUpUsers(off.url, 8) } };
		// Warm-up of both (JIT, pools), not recorded.
		for (const n of Object.values(nodes)) await measure(n.topo, n.users, { ...cfg, limits: { minMs: 800, minStreams: 32, maxMs: 3000 } });
		const onMs: number[] = [];
		const offMs: number[] = [];
		let errors = 0;
		for (let round = 0; round < cfg.rounds; round++) {
			const order = round % 2 === 0 ? (["on", "off"] as const) : (["off", "on"] as const);
			for (const which of order) {
				const { cpuMs, errors: e } = await measure(nodes[which].topo, nodes[which].users, cfg);
				(which === "on" ? onMs : offMs).push(cpuMs);
				errors += e;
			}
			log(`metrics cost round ${round + 1}: on ${onMs.at(-1)?.toFixed(3)} ms/stream, off ${offMs.at(-1)?.toFixed(3)} ms/stream`);
		}
		const medianOnMs = median(onMs);
		const medianOffMs = median(offMs);
		return {
			rounds: cfg.rounds,
			concurrency: cfg.concurrency,
			scrapeMs: cfg.scrapeMs,
			onMs,
			offMs,
			medianOnMs,
			medianOffMs,
			ratio: medianOnMs / medianOffMs,
			bestOnMs: Math.min(...onMs),
			bestOffMs: Math.min(...offMs),
			scrapes,
			errors
		};
	} finally {
		scraping = false;
		await scraper;
		await off?.stop();
		await on.stop();
	}
}
