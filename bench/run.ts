/**
 * `npm run bench`: what chatmesh adds over direct inference, streaming capacity, connection scale
 * and stored messages per second, measured on 127.0.0.1 against a simulator process. The load
 * generator (this process) and the simulator run on CPU 0, chatmesh on CPU 1. Prints the tables
 * and, last, one JSON line; progress goes to stderr.
 *
 * BENCH_FULL=1 runs the long version. Parts: BENCH_ONLY=latency,writes,connections,metrics (default all);
 * topologies: BENCH_TOPOLOGIES=embedded,cluster; BENCH_CONC=1,16,64,256 and BENCH_REPS=3 override
 * the latency points; BENCH_CHATMESH_DIR measures another checkout (e.g. a scratch copy);
 * BENCH_METRICS=0 runs chatmesh without its Prometheus metrics. The metrics-cost part (one node, its
 * metrics switched at run time): BENCH_SCRAPE_MS sets how often it scrapes while on (default 1000),
 * BENCH_METRICS_SLICES how many slice pairs it measures, BENCH_METRICS_WARMUP_MS its warm-up,
 * BENCH_METRICS_AA=1 never switches (the method's noise); BENCH_METRICS_PAIRS=n also measures n
 * pairs of nodes side by side (off by default: two processes differ by more than the cost, see
 * BENCHMARKS.md).
 */
import { execSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { startCluster, startEmbedded, startSimulator, signUpUsers, type Topology } from "./lib/chatmesh";
import { measureActive, measureIdle, type ActiveStep, type IdleResult } from "./connections";
import { measureLatency, openSockets, type PointRow } from "./latency";
import type { PointLimits } from "./lib/load";
import { CHATMESH_DIR, pinSelf, REPO_ROOT } from "./lib/procs";
import { aggregate, evaluateTargets } from "./lib/report";
import { median, quantile, round } from "./lib/stats";
import { table } from "./lib/table";
import { type InProcessResult, measureInProcess, measureMetricsCost, type MetricsCostResult } from "./metrics-cost";
import { measureWrites, type WritesResult } from "./writes";

const FULL = process.env.BENCH_FULL === "1";
const list = (name: string, fallback: string) =>
	(process.env[name] ?? fallback)
		.split(",")
		.map(s => s.trim())
		.filter(Boolean);
const ONLY = new Set(list("BENCH_ONLY", "latency,writes,connections,metrics"));
const TOPOLOGIES = list("BENCH_TOPOLOGIES", "embedded,cluster") as Array<Topology["kind"]>;
const KNOBS = { ttftMs: 50, tokenIntervalMs: 5, outputTokens: 64 };
const LOADGEN_CPU = "0";
const CHATMESH_CPU = "1";

const CONFIG = {
	concurrencies: list("BENCH_CONC", "1,16,64,256").map(Number),
	reps: Number(process.env.BENCH_REPS ?? (FULL ? 3 : 2)),
	// The short run measures 256 streams in its first repetition only.
	once: FULL ? [] : [256],
	limits: (FULL ? { minMs: 5000, minStreams: 30, maxMs: 30_000 } : { minMs: 1500, minStreams: 5, maxMs: 6000 }) satisfies PointLimits,
	warmup: { minMs: 800, minStreams: 24, maxMs: 3000 } satisfies PointLimits,
	users: 32,
	writes: { concurrency: 64, ms: FULL ? 10_000 : 4000 },
	idle: { target: FULL ? 10_000 : 10_000, step: FULL ? 1000 : 2500, maxMs: 120_000 },
	active: {
		steps: FULL ? [4, 8, 16, 32, 64, 128, 256, 512] : [8, 16, 32, 64, 128, 256],
		limits: FULL ? { minMs: 4000, minStreams: 30, maxMs: 20_000 } : { minMs: 1500, minStreams: 6, maxMs: 6000 }
	},
	gapLimitMs: 2 * KNOBS.tokenIntervalMs,
	gapMarginMs: KNOBS.tokenIntervalMs,
	metrics: process.env.BENCH_METRICS !== "0",
	// The cost of the metrics themselves: passthrough CPU per stream, metrics on (scraped) vs off.
	metricsCost: {
		// Side by side, only when asked for: fresh pairs of nodes, and rounds on each.
		pairs: Number(process.env.BENCH_METRICS_PAIRS ?? 0),
		rounds: FULL ? 10 : 6,
		// Streams per node; both nodes are loaded at once, so CPU 1 serves twice this many.
		concurrency: 8,
		limits: FULL ? { minMs: 5000, minStreams: 120, maxMs: 15_000 } : { minMs: 3000, minStreams: 60, maxMs: 8000 },
		warmup: { minMs: 8000, minStreams: 150, maxMs: 20_000 },
		scrapeMs: Number(process.env.BENCH_SCRAPE_MS ?? 1000)
	},
	// The same in one process, switched at run time: one node's CPU per stream keeps falling for
	// minutes (9 to 4.5 ms seen), so it warms up that long before the first slice.
	metricsInProcess: {
		concurrency: 16,
		warmupMs: Number(process.env.BENCH_METRICS_WARMUP_MS ?? (FULL ? 180_000 : 120_000)),
		slicePairs: Number(process.env.BENCH_METRICS_SLICES ?? (FULL ? 144 : 72)),
		sliceMs: 2000,
		settleMs: 500
	}
};

const log = (msg: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
const mib = (bytes: number) => round(bytes / 2 ** 20, 1);
const perProc = (values: Record<string, number>, digits = 2) =>
	Object.entries(values)
		.map(([name, v]) => `${name.slice(0, 4)} ${Number.isFinite(v) ? v.toFixed(digits) : "–"}`)
		.join(" / ");

function machine() {
	let commit = "unknown";
	try {
		commit = execSync("git rev-parse --short HEAD", { cwd: CHATMESH_DIR, stdio: ["ignore", "pipe", "ignore"] })
			.toString()
			.trim();
	} catch {
		// not a checkout
	}
	return {
		cpu: os.cpus()[0]?.model ?? "unknown",
		cores: os.cpus().length,
		memGiB: round(os.totalmem() / 2 ** 30, 1),
		kernel: os.release(),
		node: process.version,
		commit,
		chatmeshDir: CHATMESH_DIR
	};
}

async function main(): Promise<void> {
	const began = Date.now();
	if (!pinSelf(LOADGEN_CPU)) log("taskset failed: the load generator is not pinned");
	log(`${FULL ? "full" : "short"} run; chatmesh on CPU ${CHATMESH_CPU}, simulator + load generator on CPU ${LOADGEN_CPU}`);
	const sim = await startSimulator(KNOBS, LOADGEN_CPU);
	const rows: PointRow[] = [];
	let writes: WritesResult | undefined;
	let idle: IdleResult | undefined;
	let active: { steps: ActiveStep[]; maxUnderLimit: number | null } | undefined;
	let metricsCost: MetricsCostResult | undefined;
	let metricsInProcess: InProcessResult | undefined;
	try {
		for (const kind of TOPOLOGIES) {
			const wantsWrites = ONLY.has("writes") && kind === "cluster";
			if (!ONLY.has("latency") && !wantsWrites) continue;
			log(`starting ${kind}`);
			const topo = await (kind === "cluster" ? startCluster : startEmbedded)({ simulatorUrl: sim.url, cpu: CHATMESH_CPU });
			try {
				const users = await signUpUsers(topo.url, CONFIG.users);
				const sockets = await openSockets(topo.url, users, Math.max(...CONFIG.concurrencies, CONFIG.writes.concurrency));
				try {
					if (ONLY.has("latency"))
						await measureLatency(topo, sim, users, sockets, { ...CONFIG, expectedChunks: KNOBS.outputTokens }, row => {
							rows.push(row);
							const r = row.result;
							log(
								`${kind} ${row.mode} c=${row.concurrency} rep ${row.rep + 1}: ${r.streams} streams, ttft p50 ${round(r.ttft.p50)} p99 ${round(r.ttft.p99)}, gap p99 ${round(r.gap.p99)}, ${round(r.throughput, 1)}/s, errors ${r.errors}${r.firstError ? ` (${r.firstError})` : ""}`
							);
						});
					if (wantsWrites) {
						writes = await measureWrites(topo, sim, sockets, CONFIG.writes.concurrency, CONFIG.writes.ms, KNOBS);
						log(`writes: ${round(writes.messagesPerS, 0)} messages/s (${writes.point.errors} errors)`);
					}
				} finally {
					for (const s of sockets) s.close();
				}
			} finally {
				await topo.stop();
			}
		}
		if (ONLY.has("connections")) {
			log("starting embedded for connection scale");
			const topo = await startEmbedded({ simulatorUrl: sim.url, cpu: CHATMESH_CPU });
			try {
				const users = await signUpUsers(topo.url, 8);
				idle = await measureIdle(topo, users, CONFIG.idle.target, CONFIG.idle.step, CONFIG.idle.maxMs);
				log(
					`idle: ${idle.opened} sockets, RSS ${mib(idle.rssBeforeBytes)} → ${mib(idle.rssAfterBytes)} MiB${idle.stoppedBecause ? ` (${idle.stoppedBecause})` : ""}`
				);
				active = await measureActive(
					topo,
					sim,
					users,
					CONFIG.active.steps,
					CONFIG.active.limits,
					KNOBS.outputTokens,
					CONFIG.gapLimitMs,
					CONFIG.gapMarginMs,
					s => log(`active c=${s.concurrency}: gap p99 direct ${round(s.direct.gap.p99)} chatmesh ${round(s.socket.gap.p99)}, errors ${s.socket.errors}`)
				);
			} finally {
				await topo.stop();
			}
		}
		if (ONLY.has("metrics")) {
			log("the metrics cost: passthrough CPU per stream with metrics on (scraped) and off");
			const aa = Boolean(process.env.BENCH_METRICS_AA);
			if (CONFIG.metricsCost.pairs > 0) {
				metricsCost = await measureMetricsCost(sim, { ...CONFIG.metricsCost, expectedChunks: KNOBS.outputTokens, cpu: CHATMESH_CPU }, log);
				log(`metrics cost side by side: ${round((metricsCost.ratio - 1) * 100, 1)} % more CPU per stream`);
			}
			metricsInProcess = await measureInProcess(
				sim,
				{ ...CONFIG.metricsInProcess, aa, scrapeMs: CONFIG.metricsCost.scrapeMs, expectedChunks: KNOBS.outputTokens, cpu: CHATMESH_CPU },
				log
			);
			log(`metrics cost in one process: ${round((metricsInProcess.ratio - 1) * 100, 1)} % more CPU per stream`);
		}
	} finally {
		await sim.stop();
	}

	const { lines, direct } = aggregate(rows);
	const out: string[] = [];
	out.push(
		`chatmesh benchmarks (${FULL ? "full" : "short"}): simulator TTFT ${KNOBS.ttftMs} ms, ${KNOBS.outputTokens} tokens ${KNOBS.tokenIntervalMs} ms apart; metrics ${CONFIG.metrics ? "on" : "off"}; ${CONFIG.reps} repetition(s)${CONFIG.once.length ? ` (${CONFIG.once.join(", ")} streams: 1)` : ""}, medians; "+" = chatmesh minus direct in the same repetition`
	);
	for (const kind of TOPOLOGIES) {
		const mine = lines.filter(l => l.topology === kind);
		if (mine.length === 0) continue;
		out.push(
			table(
				`Added latency, ${kind} (ms; CPU = ms per stream of each chatmesh process; busy = share of a core)`,
				["mode", "streams", "conc", "err", "drop", "TTFT p50", "+TTFT p50", "+p95", "+p99", "gap p99", "+gap p99", "thr/direct", "CPU ms/stream", "busy"],
				mine.map(l => [
					l.mode,
					l.streams,
					l.concurrency,
					l.errors,
					l.dropped,
					l.ttftP50,
					l.addedTtftP50,
					l.addedTtftP95,
					l.addedTtftP99,
					l.gapP99,
					l.addedGapP99,
					l.throughputRatio,
					perProc(l.cpuMsPerStream),
					perProc(l.cpuShare)
				])
			)
		);
	}
	if (direct.length)
		out.push(
			table(
				"Direct baseline (OpenAI-wire SSE straight to the simulator; CPU0 busy = simulator + load generator, in cores)",
				["topology run", "conc", "streams", "err", "TTFT p50", "TTFT p99", "gap p99", "streams/s", "CPU0 busy"],
				direct.map(d => [d.topology, d.concurrency, d.streams, d.errors, d.ttftP50, d.ttftP99, d.gapP99, d.streamsPerS, d.cpu0Share])
			)
		);
	if (writes)
		out.push(
			table(
				"Writes: short turns (1 output token) over socket.io, cluster on PostgreSQL",
				["conc", "seconds", "turns", "errors", "message rows", "messages/s", "turns/s", "CPU ms/turn"],
				[
					[
						writes.concurrency,
						writes.seconds,
						writes.point.streams,
						writes.point.errors,
						writes.rows,
						writes.messagesPerS,
						writes.turnsPerS,
						perProc(Object.fromEntries(Object.entries(writes.point.cpuPerStream).filter(([k]) => k !== "simulator")))
					]
				]
			)
		);
	if (idle)
		out.push(
			table(
				`Idle socket.io connections on one embedded node (RSS before: ${mib(idle.rssBeforeBytes)} MiB; ${round(idle.bytesPerConnection / 1024, 1)} KiB per connection, first to last step)`,
				["connections", "RSS MiB", "failures", "open s"],
				idle.steps.map(s => [s.connections, mib(s.rssBytes), s.failures, s.openS])
			)
		);
	if (active)
		out.push(
			table(
				`Active streams per node (embedded, socket.io turns; lag = gap p99 > ${CONFIG.gapLimitMs} ms and > direct + ${CONFIG.gapMarginMs} ms): highest concurrency without lag ${active.maxUnderLimit ?? "none"}`,
				["conc", "direct gap p99", "gap p99", "+TTFT p50", "+TTFT p99", "thr/direct", "node busy", "err", "drop"],
				active.steps.map(s => [
					s.concurrency,
					s.direct.gap.p99,
					s.socket.gap.p99,
					s.socket.ttft.p50 - s.direct.ttft.p50,
					s.socket.ttft.p99 - s.direct.ttft.p99,
					s.socket.throughput / s.direct.throughput,
					s.socket.cpuShare.embedded,
					s.socket.errors,
					s.socket.dropped
				])
			)
		);
	if (metricsCost)
		out.push(
			table(
				`Metrics cost: passthrough CPU per stream on one embedded node, metrics on (scraped every ${metricsCost.scrapeMs / 1000} s) vs off${metricsCost.aa ? " (A/A: both nodes without metrics, the method's noise)" : ""}; ${metricsCost.pairs} pairs of fresh nodes (PostgreSQL), ${metricsCost.rounds} rounds each loading both nodes at once with ${metricsCost.concurrency} streams each; "on / off" is the median of the pairs' ratios`,
				["CPU ms/stream on", "CPU ms/stream off", "on / off", "extra", "pair ratios", "round ratios", "best on / best off", "scrapes", "errors"],
				[
					[
						metricsCost.medianOnMs,
						metricsCost.medianOffMs,
						metricsCost.ratio,
						`${round((metricsCost.ratio - 1) * 100, 1)} %`,
						metricsCost.pairRatios.map(v => round(v, 3)).join(" "),
						metricsCost.ratios.map(v => round(v, 3)).join(" "),
						`${round(metricsCost.bestOnMs, 2)} / ${round(metricsCost.bestOffMs, 2)}`,
						metricsCost.scrapes,
						metricsCost.errors
					]
				]
			)
		);
	if (metricsInProcess) {
		const m = metricsInProcess;
		const pct = (ratio: number) => `${round((ratio - 1) * 100, 1)} %`;
		out.push(
			table(
				`Metrics cost in one process: one embedded node (PostgreSQL) under ${m.concurrency} streams that never stop, warmed up ${m.warmupMs / 1000} s, its metrics switched on and off at run time${m.aa ? " (A/A: never switched, the method's noise)" : ""}; ${m.slicePairs} slice pairs (${m.settleMs / 1000} s settling + ${m.sliceMs / 1000} s measured each), scraped every ${m.scrapeMs / 1000} s while on; "on / off" is CPU per stream over all slices, with a 95 % bootstrap interval over the pairs`,
				[
					"CPU ms/stream on (median pair)",
					"off (median pair)",
					"on / off",
					"extra",
					"95 % interval",
					"pair ratios p25 / p50 / p75",
					"streams",
					"errors",
					"scrapes"
				],
				[
					[
						median(m.onMs),
						median(m.offMs),
						m.ratio,
						pct(m.ratio),
						`${pct(m.interval[0])} … ${pct(m.interval[1])}`,
						[25, 50, 75].map(p => round(quantile(m.ratios, p), 3)).join(" / "),
						m.streams,
						m.errors,
						m.scrapes
					]
				]
			)
		);
	}
	const targets = evaluateTargets(lines, idle);
	if (metricsInProcess && !metricsInProcess.aa) {
		const m = metricsInProcess;
		const sideBySide = metricsCost && !metricsCost.aa ? `; side by side ${round((metricsCost.ratio - 1) * 100, 1)} % (two processes, see BENCHMARKS.md)` : "";
		targets.push({
			name: "metrics on: passthrough CPU per stream < 5 % more than off (one process, the upper end of the 95 % interval)",
			measured: `${round((m.ratio - 1) * 100, 1)} % (${round((m.interval[0] - 1) * 100, 1)} … ${round((m.interval[1] - 1) * 100, 1)} %)${sideBySide}`,
			met: m.interval[1] < 1.05
		});
	}
	out.push(
		table(
			"Targets",
			["target", "measured", "met"],
			targets.map(t => [t.name, t.measured, t.met === null ? "not measured" : t.met ? "yes" : "NO"])
		)
	);
	const seconds = round((Date.now() - began) / 1000, 0);
	out.push(`\ntotal ${seconds} s`);
	process.stdout.write(`${out.join("\n")}\n`);

	const json = {
		bench: "chatmesh",
		full: FULL,
		at: new Date().toISOString(),
		seconds,
		machine: machine(),
		knobs: KNOBS,
		config: CONFIG,
		latency: lines,
		direct,
		writes: writes && { ...writes, point: undefined, cpuMsPerTurn: writes.point.cpuPerStream, errors: writes.point.errors },
		idle,
		metricsCost,
		metricsInProcess,
		active: active && {
			maxUnderLimit: active.maxUnderLimit,
			steps: active.steps.map(s => ({
				concurrency: s.concurrency,
				directGapP99: s.direct.gap.p99,
				gapP99: s.socket.gap.p99,
				directTtft: s.direct.ttft,
				ttft: s.socket.ttft,
				throughputRatio: s.socket.throughput / s.direct.throughput,
				errors: s.socket.errors,
				dropped: s.socket.dropped
			}))
		},
		targets
	};
	const dir = path.join(REPO_ROOT, "bench", "out");
	mkdirSync(dir, { recursive: true });
	writeFileSync(path.join(dir, "latest.json"), `${JSON.stringify(json, null, 2)}\n`);
	process.stdout.write(`${JSON.stringify(json)}\n`);
}

main().then(
	() => process.exit(0),
	(err: unknown) => {
		log(`failed: ${(err as Error).stack ?? String(err)}`);
		process.exit(1);
	}
);
