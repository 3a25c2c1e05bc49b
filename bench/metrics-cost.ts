/**
 * Part 4, what the Prometheus metrics cost: passthrough streams (`/v1/chat/completions` with an API
 * key), CPU per stream with metrics on (scraped every `scrapeMs` as Prometheus would) against off.
 *
 * The figure (`measureInProcess`): one embedded node whose metrics are switched on and off at run
 * time in short alternating slices under a load that never stops, after a long warm-up; CPU per
 * stream over all slices of each setting, with a bootstrap interval. BENCH_METRICS_AA=1 never
 * switches: the ratio it prints is the method's own noise.
 *
 * Side by side (`measureMetricsCost`, only with BENCH_METRICS_PAIRS=n): two embedded nodes on the
 * same CPU, one with METRICS_PORT, one without metrics, each on a PostgreSQL database of its own
 * (PGlite's WebAssembly speed differs from one process to another by more than the metrics cost).
 * Three kinds of noise are taken out:
 * - what the machine does meanwhile, and each process's warm-up: each round loads both nodes at the
 *   same time with the same number of streams, so it weighs on both alike;
 * - the tail of a round, when the node that started first has finished and the other has the CPU
 *   to itself: the rounds alternate which node starts, and a pair's figure is taken over all its
 *   rounds (CPU over streams of each node, on / off);
 * - what differs between two Node processes running the same code (JIT decisions, hash seeds,
 *   memory layout), a few percent for the process's whole life: the rounds run on `pairs` fresh
 *   pairs of nodes, started in alternating order, and the figure is the median of the pairs'.
 * What stays is more than the cost itself (two nodes both with metrics on differ by about 5 %), so
 * it is not the figure; BENCHMARKS.md has its runs. With BENCH_METRICS_AA=1 both nodes run without
 * metrics.
 */
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { freePort, startEmbedded, type BenchUser, type Simulator, signUpUsers, type Topology } from "./lib/chatmesh";
import { openAiStream } from "./lib/clients";
import { runPoint, type PointLimits } from "./lib/load";
import { threadCpuMs } from "./lib/procs";
import { bootstrapInterval, median } from "./lib/stats";

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

/**
 * Scrapes `url` every `everyMs` while `wanted()` holds, as Prometheus would, until stopped (the
 * wait between scrapes ends at once then); counts the answers read.
 */
function startScraper(url: string, everyMs: number, wanted: () => boolean = () => true): { count(): number; stop(): Promise<void> } {
	let running = true;
	let scrapes = 0;
	const done = new AbortController();
	const loop = (async () => {
		while (running) {
			if (wanted()) {
				const res = await fetch(url).catch(() => undefined);
				if (res?.ok) {
					await res.text();
					scrapes += 1;
				}
			}
			await sleep(everyMs, undefined, { signal: done.signal }).catch(() => {});
		}
	})();
	return {
		count: () => scrapes,
		async stop() {
			running = false;
			done.abort();
			await loop;
		}
	};
}

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
	let scraper: ReturnType<typeof startScraper> | undefined;
	try {
		for (const start of onFirst ? [startOn, startOff] : [startOff, startOn]) started.push(await start());
		const [on, off] = onFirst ? started : [started[1], started[0]];
		if (!aa) scraper = startScraper(`http://127.0.0.1:${metricsPort}/metrics`, cfg.scrapeMs);
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
		return { ...result, scrapes: scraper?.count() ?? 0 };
	} finally {
		await scraper?.stop();
		for (const topo of started) await topo.stop();
	}
}

export interface InProcessConfig {
	/** Streams in flight for the whole run (a closed loop that never pauses). */
	concurrency: number;
	warmupMs: number;
	/** Slice pairs, each one slice with metrics on and one with them off, in alternating order. */
	slicePairs: number;
	/** What is measured of a slice, after `settleMs` for the streams of the other setting to end. */
	sliceMs: number;
	settleMs: number;
	scrapeMs: number;
	cpu: string;
	/** A/A: the switch is never thrown, so the ratio shows the method's own noise. */
	aa: boolean;
}

export interface InProcessResult extends Omit<InProcessConfig, "cpu"> {
	/** CPU ms per stream of each slice pair, metrics on and off. */
	onMs: number[];
	offMs: number[];
	/** Each slice pair's on / off ratio. */
	ratios: number[];
	/** CPU per stream over every slice with metrics on, over every slice with them off. */
	ratio: number;
	/** 95 % interval of `ratio`, bootstrapped over the slice pairs. */
	interval: [number, number];
	streams: number;
	errors: number;
	scrapes: number;
}

interface SliceSpent {
	cpuMs: number;
	streams: number;
}

/** CPU per stream over slices, on / off. */
function ratioOver(pairs: ReadonlyArray<{ on: SliceSpent; off: SliceSpent }>): number {
	const sum = (pick: (p: { on: SliceSpent; off: SliceSpent }) => SliceSpent) =>
		pairs.reduce((acc, p) => ({ cpuMs: acc.cpuMs + pick(p).cpuMs, streams: acc.streams + pick(p).streams }), { cpuMs: 0, streams: 0 });
	return perStream(sum(p => p.on)) / perStream(sum(p => p.off));
}

/**
 * The same cost in one process: an embedded node (PostgreSQL) with metrics on, switched off and on
 * at run time (bench/lib/metrics-switch.cjs) under a load that never stops. After a long warm-up
 * (a node's CPU per stream keeps falling for minutes), the run is cut into short slices that
 * alternate on, off, off, on …, so any drift of the machine or the process weighs on both alike.
 * A slice counts the node's CPU (every thread) and the streams that ended in it, after a settling
 * time in which the streams begun under the other setting end. No second process, and nothing
 * installed stays active when the registry is off (chatmesh's wrappers follow its switch); only
 * Moleculer's process-metrics timer still reads its values every 5 s.
 */
export async function measureInProcess(
	sim: Simulator,
	cfg: InProcessConfig & { expectedChunks: number },
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
	const pid = node.gateway.pid;
	let enabled = true;
	let running = true;
	let streams = 0;
	let errors = 0;
	const done = new AbortController();
	const pause = (ms: number) => sleep(ms, undefined, { signal: done.signal }).catch(() => {});
	const scraper = startScraper(`http://127.0.0.1:${metricsPort}/metrics`, cfg.scrapeMs, () => enabled || cfg.aa);
	let load: Promise<unknown> = Promise.resolve();
	try {
		const users = await signUpUsers(node.url, 8);
		load = Promise.all(
			Array.from({ length: cfg.concurrency }, async (_, worker) => {
				while (running) {
					const result = await openAiStream(node.url, users[worker % users.length].apiKey);
					streams += 1;
					if (!result.ok || result.chunks < cfg.expectedChunks) errors += 1;
				}
			})
		);
		log(`metrics cost in one process: warming up for ${cfg.warmupMs / 1000} s`);
		await pause(cfg.warmupMs);
		const slice = async (on: boolean): Promise<SliceSpent> => {
			if (enabled !== on) {
				if (!cfg.aa) process.kill(pid, "SIGUSR2");
				enabled = on;
			}
			await pause(cfg.settleMs);
			const [cpuBefore, streamsBefore] = [threadCpuMs(pid), streams];
			await pause(cfg.sliceMs);
			return { cpuMs: threadCpuMs(pid) - cpuBefore, streams: streams - streamsBefore };
		};
		const pairs: Array<{ on: SliceSpent; off: SliceSpent }> = [];
		const errorsBefore = errors;
		const streamsBefore = streams;
		for (let p = 0; p < cfg.slicePairs; p++) {
			const pair = p % 2 === 0 ? { on: await slice(true), off: await slice(false) } : { off: await slice(false), on: await slice(true) };
			pairs.push(pair);
			if ((p + 1) % 10 === 0 || p + 1 === cfg.slicePairs)
				log(`metrics cost in one process: ${p + 1} of ${cfg.slicePairs} slice pairs, so far ${((ratioOver(pairs) - 1) * 100).toFixed(1)} %`);
		}
		const { cpu: _cpu, ...shown } = cfg;
		return {
			...shown,
			onMs: pairs.map(p => perStream(p.on)),
			offMs: pairs.map(p => perStream(p.off)),
			ratios: pairs.map(p => perStream(p.on) / perStream(p.off)),
			ratio: ratioOver(pairs),
			interval: bootstrapInterval(pairs, ratioOver),
			streams: streams - streamsBefore,
			errors: errors - errorsBefore,
			scrapes: scraper.count()
		};
	} finally {
		running = false;
		done.abort();
		await Promise.all([scraper.stop(), load]);
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
