/**
 * Part 4, what the Prometheus metrics cost: passthrough streams (`/v1/chat/completions` with an API
 * key) on two embedded nodes side by side on the same CPU, one with METRICS_PORT and scraped every
 * `scrapeMs` as Prometheus would, one without metrics. Each node has a PostgreSQL database of its
 * own rather than PGlite: PGlite's WebAssembly runs in the node's process and its speed differs
 * from one process to another by more than the metrics cost.
 *
 * Three kinds of noise are taken out:
 * - what the machine does meanwhile, and each process's warm-up: each round loads both nodes at the
 *   same time with the same number of streams, so it weighs on both alike;
 * - the tail of a round, when the node that started first has finished and the other has the CPU
 *   to itself: the rounds alternate which node starts, and a pair's figure is taken over all its
 *   rounds (CPU over streams of each node, on / off);
 * - what differs between two Node processes running the same code (JIT decisions, hash seeds,
 *   memory layout), a few percent for the process's whole life: the rounds run on `pairs` fresh
 *   pairs of nodes, started in alternating order, and the figure is the median of the pairs'.
 *
 * BENCH_METRICS_AA=1 starts both nodes without metrics (and scrapes nothing): the ratio it prints is
 * the method's own noise. BENCH_METRICS_PAIRS sets the number of pairs.
 */
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort, startEmbedded, type BenchUser, type Simulator, signUpUsers, type Topology } from "./lib/chatmesh";
import { openAiStream } from "./lib/clients";
import { runPoint, type PointLimits } from "./lib/load";
import { threadCpuMs } from "./lib/procs";
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
	/** Each pair's ratio: CPU per stream over all its rounds, on / off. */
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

type Node = { topo: Topology; users: BenchUser[] };

interface Spent {
	cpuMs: number;
	streams: number;
}

/**
 * Streams on both nodes at once: the CPU each spent and its streams. The node whose streams start
 * first tends to finish first and leave the other alone on the CPU for the tail of the round, so
 * the rounds alternate which one starts.
 */
async function measureBoth(
	nodes: { on: Node; off: Node },
	cfg: MetricsCostConfig,
	limits: PointLimits,
	onFirst: boolean
): Promise<{ on: Spent; off: Spent; errors: number }> {
	const measure = async ({ topo, users }: Node) => {
		const before = threadCpuMs(topo.gateway.pid);
		const point = await runPoint(cfg.concurrency, w => openAiStream(topo.url, users[w % users.length].apiKey), limits, cfg.expectedChunks);
		return { cpuMs: threadCpuMs(topo.gateway.pid) - before, streams: point.streams, errors: point.errors };
	};
	const [on, off] = onFirst
		? await Promise.all([measure(nodes.on), measure(nodes.off)])
		: await Promise.all([measure(nodes.off), measure(nodes.on)]).then(([offSpent, onSpent]) => [onSpent, offSpent]);
	return { on, off, errors: on.errors + off.errors };
}

const perStream = (spent: Spent) => spent.cpuMs / Math.max(1, spent.streams);

/** One pair of fresh nodes (started in the given order), warmed up, then measured round by round. */
async function measurePair(
	sim: Simulator,
	cfg: MetricsCostConfig,
	onFirst: boolean,
	aa: boolean,
	log: (msg: string) => void
): Promise<{ on: number[]; off: number[]; ratios: number[]; ratio: number; scrapes: number; errors: number }> {
	const metricsPort = await freePort();
	const startOn = () =>
		startEmbedded({
			simulatorUrl: sim.url,
			cpu: cfg.cpu,
			database: "postgres",
			metrics: !aa,
			extraEnv: aa ? {} : { METRICS_PORT: String(metricsPort) }
		});
	const startOff = () => startEmbedded({ simulatorUrl: sim.url, cpu: cfg.cpu, database: "postgres", metrics: false });
	const started: Topology[] = [];
	let scrapes = 0;
	let scraping = false;
	let scraper: Promise<void> = Promise.resolve();
	// The wait between scrapes ends early when the pair is done.
	const done = new AbortController();
	const pause = () => sleep(cfg.scrapeMs, undefined, { signal: done.signal }).catch(() => {});
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
				await pause();
			}
		})();
		const nodes = { on: { topo: on, users: await signUpUsers(on.url, 8) }, off: { topo: off, users: await signUpUsers(off.url, 8) } };
		// Warm-up of both (JIT, pools, caches), not recorded: per-stream CPU keeps falling for several seconds.
		await measureBoth(nodes, cfg, cfg.warmup, onFirst);
		const result = { on: [] as number[], off: [] as number[], ratios: [] as number[], ratio: 1, scrapes: 0, errors: 0 };
		const total = { on: { cpuMs: 0, streams: 0 }, off: { cpuMs: 0, streams: 0 } };
		for (let round = 0; round < cfg.rounds; round++) {
			const { on: onSpent, off: offSpent, errors } = await measureBoth(nodes, cfg, cfg.limits, round % 2 === 0);
			for (const [sum, spent] of [
				[total.on, onSpent],
				[total.off, offSpent]
			] as const) {
				sum.cpuMs += spent.cpuMs;
				sum.streams += spent.streams;
			}
			const [onMs, offMs] = [perStream(onSpent), perStream(offSpent)];
			result.on.push(onMs);
			result.off.push(offMs);
			result.ratios.push(onMs / offMs);
			result.errors += errors;
			log(`metrics cost round ${round + 1}: on ${onMs.toFixed(3)} ms/stream, off ${offMs.toFixed(3)} ms/stream, ratio ${(onMs / offMs).toFixed(3)}`);
		}
		// Over all rounds (as many started by each node): CPU per stream of each.
		result.ratio = perStream(total.on) / perStream(total.off);
		return { ...result, scrapes };
	} finally {
		scraping = false;
		done.abort();
		await scraper;
		for (const topo of started) await topo.stop();
	}
}

export interface InProcessResult {
	windows: number;
	concurrency: number;
	/** CPU ms per stream in each window with metrics on, and in the window after it with them off. */
	onMs: number[];
	offMs: number[];
	/** Each window pair's on / off ratio, and their median. */
	ratios: number[];
	ratio: number;
	errors: number;
}

/**
 * The same cost in one process: an embedded node (PostgreSQL) with metrics on, switched off and on
 * again at run time (bench/lib/metrics-switch.cjs) between windows of load, scraped while they are
 * on. No second process and nothing beside it on the CPU; what stays installed when they are off
 * (see the switch) makes this figure a little low.
 */
export async function measureInProcess(
	sim: Simulator,
	cfg: MetricsCostConfig & { windows: number; inProcessWarmup: PointLimits },
	log: (msg: string) => void
): Promise<InProcessResult> {
	const metricsPort = await freePort();
	const node = await startEmbedded({
		simulatorUrl: sim.url,
		cpu: cfg.cpu,
		database: "postgres",
		metrics: true,
		nodeArgs: ["--require", path.join(import.meta.dirname, "lib", "metrics-switch.cjs")],
		extraEnv: { METRICS_PORT: String(metricsPort) }
	});
	let enabled = true;
	let scraping = true;
	const done = new AbortController();
	const scraper = (async () => {
		while (scraping) {
			if (enabled)
				await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then(
					res => res.text(),
					() => undefined
				);
			await sleep(cfg.scrapeMs, undefined, { signal: done.signal }).catch(() => {});
		}
	})();
	const users = await signUpUsers(node.url, 8);
	const window = async () => {
		const before = threadCpuMs(node.gateway.pid);
		const point = await runPoint(cfg.concurrency * 2, w => openAiStream(node.url, users[w % users.length].apiKey), cfg.limits, cfg.expectedChunks);
		return { cpuMs: (threadCpuMs(node.gateway.pid) - before) / Math.max(1, point.streams), errors: point.errors };
	};
	try {
		log(`metrics cost in one process: warming up for ${cfg.inProcessWarmup.minMs / 1000} s`);
		await runPoint(cfg.concurrency * 2, w => openAiStream(node.url, users[w % users.length].apiKey), cfg.inProcessWarmup, cfg.expectedChunks);
		const result: InProcessResult = { windows: cfg.windows, concurrency: cfg.concurrency * 2, onMs: [], offMs: [], ratios: [], ratio: 1, errors: 0 };
		const ratios = result.ratios;
		// Windows in pairs, on then off, then off then on, so a drift of the machine weighs on both.
		const measureWith = async (on: boolean) => {
			if (enabled !== on) {
				process.kill(node.gateway.pid, "SIGUSR2");
				enabled = on;
			}
			return window();
		};
		for (let w = 0; w < cfg.windows; w++) {
			const [on, off] = w % 2 === 0 ? [await measureWith(true), await measureWith(false)] : [await measureWith(false), await measureWith(true)].reverse();
			result.onMs.push(on.cpuMs);
			result.offMs.push(off.cpuMs);
			ratios.push(on.cpuMs / off.cpuMs);
			result.errors += on.errors + off.errors;
			log(
				`metrics cost in one process, window pair ${w + 1}: on ${on.cpuMs.toFixed(3)} ms/stream, off ${off.cpuMs.toFixed(3)}, ratio ${(on.cpuMs / off.cpuMs).toFixed(3)}`
			);
		}
		result.ratio = median(ratios);
		return result;
	} finally {
		scraping = false;
		done.abort();
		await scraper;
		await node.stop();
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
		pairRatios.push(result.ratio);
		scrapes += result.scrapes;
		errors += result.errors;
		log(`metrics cost pair ${pair + 1}: ratio ${result.ratio.toFixed(3)}`);
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
