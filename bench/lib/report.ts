/**
 * Turns point rows into the reported numbers: for each topology, mode and concurrency, the median
 * over repetitions of chatmesh minus direct (paired by repetition, as they ran side by side), and
 * the targets of BENCHMARKS.md, each met or not.
 */
import type { Mode, PointRow } from "../latency";
import { median, round } from "./stats";

export interface LatencyLine {
	topology: string;
	mode: Exclude<Mode, "direct">;
	concurrency: number;
	reps: number;
	streams: number;
	errors: number;
	dropped: number;
	ttftP50: number;
	ttftP99: number;
	addedTtftP50: number;
	addedTtftP95: number;
	addedTtftP99: number;
	gapP99: number;
	addedGapP99: number;
	throughputRatio: number;
	/** CPU ms per stream, by chatmesh process. */
	cpuMsPerStream: Record<string, number>;
	/** Share of a core used by each chatmesh process. */
	cpuShare: Record<string, number>;
	firstError?: string;
}

export interface DirectLine {
	topology: string;
	concurrency: number;
	streams: number;
	errors: number;
	ttftP50: number;
	ttftP99: number;
	gapP99: number;
	streamsPerS: number;
	/** CPU 0 (simulator + load generator) busy share during the chatmesh points, median. */
	cpu0Share: number;
}

const CHATMESH_PROCS = (row: PointRow) => Object.keys(row.result.cpuPerStream).filter(name => name !== "simulator");

export function aggregate(rows: PointRow[]): { lines: LatencyLine[]; direct: DirectLine[] } {
	const lines: LatencyLine[] = [];
	const direct: DirectLine[] = [];
	const keys = new Set(rows.map(r => `${r.topology}|${r.concurrency}`));
	for (const key of keys) {
		const [topology, c] = key.split("|");
		const concurrency = Number(c);
		const here = rows.filter(r => r.topology === topology && r.concurrency === concurrency);
		const base = new Map(here.filter(r => r.mode === "direct").map(r => [r.rep, r.result]));
		const chatmeshRows = here.filter(r => r.mode !== "direct");
		const d = [...base.values()];
		direct.push({
			topology,
			concurrency,
			streams: d.reduce((s, r) => s + r.streams, 0),
			errors: d.reduce((s, r) => s + r.errors, 0),
			ttftP50: median(d.map(r => r.ttft.p50)),
			ttftP99: median(d.map(r => r.ttft.p99)),
			gapP99: median(d.map(r => r.gap.p99)),
			streamsPerS: median(d.map(r => r.throughput)),
			cpu0Share: median(
				chatmeshRows.concat(here.filter(r => r.mode === "direct")).map(r => (r.result.cpuShare.simulator ?? 0) + (r.result.cpuShare.loadgen ?? 0))
			)
		});
		for (const mode of ["passthrough", "socket", "sse"] as const) {
			const mine = here.filter(r => r.mode === mode && base.has(r.rep));
			if (mine.length === 0) continue;
			const paired = (f: (r: PointRow["result"]) => number) => median(mine.map(r => f(r.result) - f(base.get(r.rep) as PointRow["result"])));
			const procs = CHATMESH_PROCS(mine[0]);
			lines.push({
				topology,
				mode,
				concurrency,
				reps: mine.length,
				streams: mine.reduce((s, r) => s + r.result.streams, 0),
				errors: mine.reduce((s, r) => s + r.result.errors, 0),
				dropped: mine.reduce((s, r) => s + r.result.dropped, 0),
				ttftP50: median(mine.map(r => r.result.ttft.p50)),
				ttftP99: median(mine.map(r => r.result.ttft.p99)),
				addedTtftP50: paired(r => r.ttft.p50),
				addedTtftP95: paired(r => r.ttft.p95),
				addedTtftP99: paired(r => r.ttft.p99),
				gapP99: median(mine.map(r => r.result.gap.p99)),
				addedGapP99: paired(r => r.gap.p99),
				throughputRatio: median(mine.map(r => r.result.throughput / (base.get(r.rep) as PointRow["result"]).throughput)),
				cpuMsPerStream: Object.fromEntries(procs.map(p => [p, median(mine.map(r => r.result.cpuPerStream[p]))])),
				cpuShare: Object.fromEntries(procs.map(p => [p, median(mine.map(r => r.result.cpuShare[p]))])),
				firstError: mine.find(r => r.result.firstError)?.result.firstError
			});
		}
	}
	const order = (a: { topology: string; concurrency: number }, b: { topology: string; concurrency: number }) =>
		a.topology.localeCompare(b.topology) * -1 || a.concurrency - b.concurrency;
	lines.sort((a, b) => order(a, b) || a.mode.localeCompare(b.mode));
	direct.sort(order);
	return { lines, direct };
}

export interface Target {
	name: string;
	measured: string;
	/** null: not measured in this run. */
	met: boolean | null;
}

const ms = (v: number) => (Number.isFinite(v) ? `${round(v, 2)} ms` : "n/a");

/** The latency, gap and connection targets chatmesh is held to, per topology where it applies. */
export function evaluateTargets(
	lines: LatencyLine[],
	idle: { opened: number; target: number; rssAfterBytes: number; bytesPerConnection: number; rssBeforeBytes: number } | undefined
): Target[] {
	const targets: Target[] = [];
	const at = (topology: string, mode: string, c: number) => lines.find(l => l.topology === topology && l.mode === mode && l.concurrency === c);
	for (const topology of [...new Set(lines.map(l => l.topology))]) {
		const p = at(topology, "passthrough", 64);
		targets.push({
			name: `${topology}: passthrough added TTFT p50 ≤ 1 ms, p99 ≤ 5 ms at 64 streams`,
			measured: p ? `p50 ${ms(p.addedTtftP50)}, p99 ${ms(p.addedTtftP99)}` : "n/a",
			met: p ? p.addedTtftP50 <= 1 && p.addedTtftP99 <= 5 : null
		});
		for (const mode of ["socket", "sse"] as const) {
			const t = at(topology, mode, 64);
			targets.push({
				name: `${topology}: full turn (${mode}) added TTFT p50 ≤ 10 ms, p99 ≤ 30 ms at 64 streams`,
				measured: t ? `p50 ${ms(t.addedTtftP50)}, p99 ${ms(t.addedTtftP99)}` : "n/a",
				met: t ? t.addedTtftP50 <= 10 && t.addedTtftP99 <= 30 : null
			});
			const all = lines.filter(l => l.topology === topology && l.mode === mode);
			const worstGap = Math.max(...all.map(l => l.addedGapP99));
			targets.push({
				name: `${topology}: full turn (${mode}) added gap between chunks p99 ≤ 2 ms (every concurrency)`,
				measured: all.length ? `worst ${ms(worstGap)} (${all.map(l => `${l.concurrency}: ${round(l.addedGapP99, 2)}`).join(", ")})` : "n/a",
				met: all.length ? worstGap <= 2 : null
			});
			const dropped = all.reduce((s, l) => s + l.dropped, 0);
			const errors = all.reduce((s, l) => s + l.errors, 0);
			targets.push({
				name: `${topology}: full turn (${mode}) zero dropped chunks`,
				measured: all.length ? `${dropped} dropped, ${errors} errors in ${all.reduce((s, l) => s + l.streams, 0)} streams` : "n/a",
				met: all.length ? dropped === 0 : null
			});
			const big = at(topology, mode, 256);
			targets.push({
				name: `${topology}: full turn (${mode}) ≥ 80 % of direct throughput at 256 streams`,
				measured: big ? `${round(big.throughputRatio * 100, 1)} %` : "not measured",
				met: big ? big.throughputRatio >= 0.8 : null
			});
		}
		const pass = lines.filter(l => l.topology === topology && l.mode === "passthrough").sort((a, b) => b.concurrency - a.concurrency)[0];
		if (pass) {
			const gatewayName = topology === "cluster" ? "gateway" : "embedded";
			const cpu = pass.cpuMsPerStream[gatewayName];
			targets.push({
				name: `${topology}: passthrough gateway CPU ≤ 1.5 ms per 64-token stream at saturation`,
				measured: `${ms(cpu)} per stream at ${pass.concurrency} streams (${gatewayName} process busy ${round((pass.cpuShare[gatewayName] ?? 0) * 100, 0)} % of a core)`,
				met: cpu <= 1.5
			});
		}
	}
	if (idle) {
		const projected = idle.rssBeforeBytes + 10_000 * idle.bytesPerConnection;
		const reached = idle.opened >= 10_000;
		targets.push({
			name: "≥ 10,000 idle socket.io connections on one gateway node under 1 GiB RSS",
			measured: reached
				? `${idle.opened} connections, RSS ${round(idle.rssAfterBytes / 2 ** 20, 0)} MiB`
				: `${idle.opened} of ${idle.target} opened, RSS ${round(idle.rssAfterBytes / 2 ** 20, 0)} MiB; at ${round(idle.bytesPerConnection / 1024, 1)} KiB each, 10,000 would be ~${round(projected / 2 ** 20, 0)} MiB (projected)`,
			met: reached ? idle.rssAfterBytes < 2 ** 30 : idle.opened < idle.target ? false : null
		});
	}
	return targets;
}
