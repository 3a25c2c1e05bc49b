/**
 * Part 2, connection scale on one gateway node: idle socket.io connections opened in steps up to a
 * target (or until handshakes fail), with the node's RSS at each step; then active chat turns per
 * node at rising concurrency, each step beside a direct run, until chunks lag (the inter-chunk
 * gap p99 passes a threshold).
 */
import { ChatSocket } from "./lib/clients";
import type { BenchUser, Simulator, Topology } from "./lib/chatmesh";
import { runPoint, type PointLimits, type PointResult } from "./lib/load";
import { rssBytes, sleep } from "./lib/procs";
import { openSockets, runners } from "./latency";

export interface IdleStep {
	connections: number;
	rssBytes: number;
	failures: number;
	/** Seconds spent opening this step's connections. */
	openS: number;
}

export interface IdleResult {
	target: number;
	opened: number;
	rssBeforeBytes: number;
	rssAfterBytes: number;
	/** RSS growth per connection between the first and the last step (less GC noise than before/after). */
	bytesPerConnection: number;
	steps: IdleStep[];
	stoppedBecause?: string;
}

/** Opens idle sockets in steps (`parallel` handshakes in flight), stopping at the target, on failures, or at `maxMs`. */
export async function measureIdle(topo: Topology, users: BenchUser[], target: number, stepSize: number, maxMs: number, parallel = 100): Promise<IdleResult> {
	const pid = topo.gateway.pid;
	await sleep(1000);
	const rssBeforeBytes = rssBytes(pid);
	const sockets: ChatSocket[] = [];
	const steps: IdleStep[] = [];
	const start = Date.now();
	let stoppedBecause: string | undefined;
	try {
		while (sockets.length < target && !stoppedBecause) {
			const stepStart = Date.now();
			const goal = Math.min(target, sockets.length + stepSize);
			let failures = 0;
			let lastError = "";
			let next = sockets.length;
			await Promise.all(
				Array.from({ length: parallel }, async () => {
					while (next < goal && failures < 20 && Date.now() - start < maxMs) {
						const i = next++;
						try {
							sockets.push(await ChatSocket.connect(topo.url, users[i % users.length].accessToken, 20_000));
						} catch (err) {
							failures += 1;
							lastError = (err as Error).message;
						}
					}
				})
			);
			await sleep(500);
			steps.push({ connections: sockets.length, rssBytes: rssBytes(pid), failures, openS: (Date.now() - stepStart) / 1000 });
			if (failures >= 20) stoppedBecause = `handshakes failing: ${lastError}`;
			else if (Date.now() - start >= maxMs) stoppedBecause = `time limit ${maxMs} ms`;
		}
		await sleep(1000);
		const rssAfterBytes = rssBytes(pid);
		return {
			target,
			opened: sockets.length,
			rssBeforeBytes,
			rssAfterBytes,
			bytesPerConnection:
				steps.length > 1
					? (rssAfterBytes - steps[0].rssBytes) / Math.max(1, sockets.length - steps[0].connections)
					: (rssAfterBytes - rssBeforeBytes) / Math.max(1, sockets.length),
			steps,
			stoppedBecause
		};
	} finally {
		for (const s of sockets) s.close();
		await sleep(500);
	}
}

export interface ActiveStep {
	concurrency: number;
	direct: PointResult;
	socket: PointResult;
}

/**
 * Chat turns over socket.io at rising concurrency, each beside a direct run, until chunks lag: the
 * gap p99 passes `gapLimitMs` and exceeds the same step's direct gap p99 by more than `marginMs`
 * (on 2 shared cores the direct baseline itself can pass the limit), or a stream fails.
 */
export async function measureActive(
	topo: Topology,
	sim: Simulator,
	users: BenchUser[],
	steps: number[],
	limits: PointLimits,
	expectedChunks: number,
	gapLimitMs: number,
	marginMs: number,
	onStep: (step: ActiveStep) => void
): Promise<{ steps: ActiveStep[]; maxUnderLimit: number | null }> {
	const sockets = await openSockets(topo.url, users, Math.max(...steps));
	const run = runners(topo, sim, users, sockets);
	const watched = [...topo.procs.map(p => ({ name: p.name, pid: p.pid })), { name: "simulator", pid: sim.proc.pid }];
	const done: ActiveStep[] = [];
	let maxUnderLimit: number | null = null;
	try {
		await runPoint(16, run.socket, { minMs: 500, minStreams: 16, maxMs: 3000 }, expectedChunks); // warm-up
		for (const concurrency of steps) {
			const direct = await runPoint(concurrency, run.direct, limits, expectedChunks, watched.slice(-1));
			const socket = await runPoint(concurrency, run.socket, limits, expectedChunks, watched);
			const step = { concurrency, direct, socket };
			done.push(step);
			onStep(step);
			const lagging = !(socket.gap.p99 <= gapLimitMs || socket.gap.p99 - direct.gap.p99 <= marginMs) || socket.errors > 0 || socket.dropped > 0;
			if (lagging) break;
			maxUnderLimit = concurrency;
		}
	} finally {
		for (const s of sockets) s.close();
	}
	return { steps: done, maxUnderLimit };
}
