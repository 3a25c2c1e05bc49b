/**
 * One measurement point: `concurrency` workers run streams back to back (a closed loop) until the
 * point has lasted `minMs` and produced `minStreams`, bounded by `maxMs`; streams in flight then
 * finish. Returns every stream's result and the wall time, plus the CPU time each watched process
 * spent during the point.
 */
import type { StreamResult } from "./clients";
import { cpuMs } from "./procs";
import { summarize, type Summary } from "./stats";

export interface PointLimits {
	minMs: number;
	minStreams: number;
	maxMs: number;
}

export interface PointResult {
	streams: number;
	errors: number;
	/** Chunks expected but not received, over all streams (errored ones included). */
	dropped: number;
	ttft: Summary;
	gap: Summary;
	/** Completed streams per second of wall time. */
	throughput: number;
	wallMs: number;
	/** CPU ms per stream of each watched process, by name. */
	cpuPerStream: Record<string, number>;
	/** Share of one core each watched process used during the point (1 = a full core). */
	cpuShare: Record<string, number>;
	firstError?: string;
}

export type Runner = (worker: number) => Promise<StreamResult>;

export async function runPoint(
	concurrency: number,
	run: Runner,
	limits: PointLimits,
	expectedChunks: number,
	watched: Array<{ name: string; pid: number }> = []
): Promise<PointResult> {
	const results: StreamResult[] = [];
	const cpuBefore = watched.map(w => cpuMs(w.pid));
	const selfBefore = process.cpuUsage();
	const start = performance.now();
	let started = 0;
	const more = () => {
		const elapsed = performance.now() - start;
		return elapsed < limits.maxMs && (elapsed < limits.minMs || started < limits.minStreams);
	};
	await Promise.all(
		Array.from({ length: concurrency }, async (_, worker) => {
			while (more()) {
				started += 1;
				results.push(await run(worker));
			}
		})
	);
	const wallMs = performance.now() - start;
	const self = process.cpuUsage(selfBefore);
	const cpuAfter = watched.map(w => cpuMs(w.pid));

	const ok = results.filter(r => r.ok);
	const cpuPerStream: Record<string, number> = {};
	const cpuShare: Record<string, number> = {};
	watched.forEach((w, i) => {
		const spent = cpuAfter[i] - cpuBefore[i];
		cpuPerStream[w.name] = spent / Math.max(1, results.length);
		cpuShare[w.name] = spent / wallMs;
	});
	cpuShare.loadgen = (self.user + self.system) / 1000 / wallMs;
	return {
		streams: results.length,
		errors: results.length - ok.length,
		dropped: results.reduce((sum, r) => sum + Math.max(0, expectedChunks - r.chunks), 0),
		ttft: summarize(ok.map(r => r.ttftMs)),
		gap: summarize(ok.flatMap(r => r.gapsMs)),
		throughput: (ok.length * 1000) / wallMs,
		wallMs,
		cpuPerStream,
		cpuShare,
		firstError: results.find(r => !r.ok)?.error
	};
}
