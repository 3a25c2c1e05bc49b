/**
 * Part 3, writes: many short chat turns (one output token, no delays) over socket.io against the
 * cluster, counting rows in PostgreSQL's `messages` before and after (each turn stores the user's
 * message and the answer).
 */
import type { ChatSocket } from "./lib/clients";
import { countMessages, type Simulator, type Topology } from "./lib/chatmesh";
import { runPoint, type PointResult } from "./lib/load";

export interface WritesResult {
	concurrency: number;
	seconds: number;
	rows: number;
	messagesPerS: number;
	turnsPerS: number;
	point: PointResult;
}

export async function measureWrites(
	topo: Topology,
	sim: Simulator,
	sockets: ChatSocket[],
	concurrency: number,
	ms: number,
	restore: { ttftMs: number; tokenIntervalMs: number; outputTokens: number }
): Promise<WritesResult> {
	if (!topo.databaseUrl) throw new Error("writes are measured on the cluster (PostgreSQL)");
	await sim.configure({ outputTokens: 1, ttftMs: 0, tokenIntervalMs: 0 });
	try {
		const watched = [...topo.procs.map(p => ({ name: p.name, pid: p.pid })), { name: "simulator", pid: sim.proc.pid }];
		const run = (w: number) => sockets[w].turn();
		await runPoint(Math.min(concurrency, 16), run, { minMs: 500, minStreams: 16, maxMs: 3000 }, 1); // warm-up
		const before = await countMessages(topo.databaseUrl);
		const point = await runPoint(concurrency, run, { minMs: ms, minStreams: 0, maxMs: ms }, 1, watched);
		const rows = (await countMessages(topo.databaseUrl)) - before;
		const seconds = point.wallMs / 1000;
		return { concurrency, seconds, rows, messagesPerS: rows / seconds, turnsPerS: point.throughput, point };
	} finally {
		await sim.configure(restore);
	}
}
