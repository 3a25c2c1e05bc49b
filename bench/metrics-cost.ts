/**
 * Part 4, what the Prometheus metrics cost: passthrough streams (`/v1/chat/completions` with an API
 * key) on two embedded nodes side by side on the same CPU, one with METRICS_PORT and scraped every
 * `scrapeMs` as Prometheus would, one without metrics.
 *
 * Two kinds of noise are taken out:
 * - what the machine does meanwhile, and each process's warm-up: each round loads both nodes at the
 *   same time with the same number of streams, so it weighs on both alike;
 * - what differs between two Node processes running the same code (JIT decisions, hash seeds,
 *   memory layout), which is several percent and lasts for the process's life: the rounds run on
 *   `pairs` fresh pairs of nodes, started in alternating order.
 * The figure is the median over the pairs of each pair's median round ratio (on / off CPU ms per
 * stream).
 *
 * BENCH_METRICS_AA=1 starts both nodes without metrics (and scrapes nothing): the ratio it prints is
 * the method's own noise.
 */
import { readdirSync, readFileSync } from "node:fs";
import { freePort, startEmbedded, type BenchUser, type Simulator, signUpUsers, type Topology } from "./lib/chatmesh";
import { openAiStream } from "./lib/clients";
import { runPoint, type PointLimits } from "./lib/load";
import { median } from "./lib/stats";

export interface MetricsCostConfig {
	pairs: number;
	/** Rounds per pair. */
	rounds: number;
	concurrency: number;
	limits: PointLimits;
	warmup: PointLimits;
	scrapeMs: number;
	expectedChunks: number;
	cpu: string;
}

export interface MetricsCostResult {
	pairs: number;
	rounds: number;
	concurrency: number;
	scrapeMs: number;
	/** CPU ms per stream of the node, per round (all pairs). */
	onMs: number[];
	offMs: number[];
	medianOnMs: number;
	medianOffMs: number;
	/** The median of the pairs' ratios. */
	ratio: number;
	/** Each pair's median round ratio (on / off). */
	pairRatios: number[];
	/** Each round's on / off ratio (all pairs). */
	ratios: number[];
	/** Both nodes ran without metrics (BENCH_METRICS_AA=1). */
	aa: boolean;
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

type Node = { topo: Topology; users: BenchUser[] };

/** Streams on both nodes at once, the CPU per stream of each. */
async function measureBoth(nodes: { on: Node; off: Node }, cfg: MetricsCostConfig, limits: PointLimits): Promise<{ on: number; off: number; errors: number }> {
	const measure = async ({ topo, users }: Node) => {
		const before = threadCpuMs(topo.gateway.pid);
		const point = await runPoint(cfg.concurrency, w => openAiStream(topo.url, users[w % users.length].apiKey), limits, cfg.expectedChunks);
		return { cpuMs: (threadCpuMs(topo.gateway.pid) - before) / Math.max(1, point.streams), errors: point.errors };
	};
	const [on, off] = await Promise.all([measure(nodes.on), measure(nodes.off)]);
	return { on: on.cpuMs, off: off.cpuMs, errors: on.errors + off.errors };
}

/** One pair of fresh nodes (started in the given order), warmed up, then measured round by round. */
async function measurePair(
	sim: Simulator,
	cfg: MetricsCostConfig,
	onFirst: boolean,
	aa: boolean,
	log: (msg: string) => void
): Promise<{ on: number[]; off: number[]; ratios: number[]; scrapes: number; errors: number }> {
	const metricsPort = await freePort();
	const startOn = () => startEmbedded({ simulatorUrl: sim.url, cpu: cfg.cpu, metrics: !aa, extraEnv: aa ? {} : { METRICS_PORT: String(metricsPort) } });
	const startOff = () => startEmbedded({ simulatorUrl: sim.url, cpu: cfg.cpu, metrics: false });
	const started: Topology[] = [];
	let scrapes = 0;
	let scraping = false;
	let scraper: Promise<void> = Promise.resolve();
	try {
		for (const start of onFirst ? [startOn, startOff] : [startOff, startOn]) started.push(await start());
		const [on, off] = onFirst ? started : [started[1], started[0]];
		scraping = !aa;
		scraper = (async () => {
			while (scraping) {
				const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).catch(() => undefined);
				if (res?.ok) {
					await res.text();
					scrapes += 1;
				}
				await new Promise(resolve => setTimeout(resolve, cfg.scrapeMs));
			}
		})();
		const nodes = { on: { topo: on, users: await signUpUsers(on.url, 8) }, off: { topo: off, users: await signUpUsers(off.url, 8) } };
		// Warm-up of both (JIT, pools, caches), not recorded: per-stream CPU keeps falling for several seconds.
		await measureBoth(nodes, cfg, cfg.warmup);
		const result = { on: [] as number[], off: [] as number[], ratios: [] as number[], scrapes: 0, errors: 0 };
		for (let round = 0; round < cfg.rounds; round++) {
			const { on: onMs, off: offMs, errors } = await measureBoth(nodes, cfg, cfg.limits);
			result.on.push(onMs);
			result.off.push(offMs);
			result.ratios.push(onMs / offMs);
			result.errors += errors;
			log(`metrics cost round ${round + 1}: on ${onMs.toFixed(3)} ms/stream, off ${offMs.toFixed(3)} ms/stream, ratio ${(onMs / offMs).toFixed(3)}`);
		}
		return { ...result, scrapes };
	} finally {
		scraping = false;
		await scraper;
		for (const topo of started) await topo.stop();
	}
}

export async function measureMetricsCost(sim: Simulator, cfg: MetricsCostConfig, log: (msg: string) => void): Promise<MetricsCostResult> {
	const aa = Boolean(process.env.BENCH_METRICS_AA);
	const onMs: number[] = [];
	const offMs: number[] = [];
	const ratios: number[] = [];
	const pairRatios: number[] = [];
	let scrapes = 0;
	let errors = 0;
	for (let pair = 0; pair < cfg.pairs; pair++) {
		const onFirst = pair % 2 === 0;
		log(`metrics cost pair ${pair + 1} of ${cfg.pairs}: starting two embedded nodes (${onFirst ? "on, then off" : "off, then on"})`);
		const result = await measurePair(sim, cfg, onFirst, aa, log);
		onMs.push(...result.on);
		offMs.push(...result.off);
		ratios.push(...result.ratios);
		pairRatios.push(median(result.ratios));
		scrapes += result.scrapes;
		errors += result.errors;
		log(`metrics cost pair ${pair + 1}: ratio ${median(result.ratios).toFixed(3)}`);
	}
	return {
		pairs: cfg.pairs,
		rounds: cfg.rounds,
		concurrency: cfg.concurrency,
		scrapeMs: cfg.scrapeMs,
		onMs,
		offMs,
		medianOnMs: median(onMs),
		medianOffMs: median(offMs),
		ratio: median(pairRatios),
		pairRatios,
		ratios,
		aa,
		bestOnMs: Math.min(...onMs),
		bestOffMs: Math.min(...offMs),
		scrapes,
		errors
	};
}
