/**
 * Part 1, added latency: the same load straight to the simulator (direct) and through chatmesh,
 * interleaved point by point: `/v1/chat/completions` passthrough with an API key, and the full
 * chat turn over socket.io and over SSE. One row per (mode, concurrency, repetition).
 */
import { ChatSocket, openAiStream, sseTurn } from "./lib/clients";
import type { BenchUser, Simulator, Topology } from "./lib/chatmesh";
import { runPoint, type PointLimits, type PointResult, type Runner } from "./lib/load";

export const MODES = ["direct", "passthrough", "socket", "sse"] as const;
export type Mode = (typeof MODES)[number];

export interface LatencyConfig {
	concurrencies: number[];
	reps: number;
	limits: PointLimits;
	warmup: PointLimits;
	expectedChunks: number;
	/** Concurrencies measured in the first repetition only (the slowest points of a short run). */
	once?: number[];
}

export interface PointRow {
	topology: Topology["kind"];
	mode: Mode;
	concurrency: number;
	rep: number;
	result: PointResult;
}

/** Opens `count` sockets, `batch` handshakes at a time, users taken round robin. */
export async function openSockets(url: string, users: BenchUser[], count: number, batch = 50): Promise<ChatSocket[]> {
	const sockets: ChatSocket[] = [];
	for (let i = 0; i < count; i += batch) {
		const size = Math.min(batch, count - i);
		sockets.push(...(await Promise.all(Array.from({ length: size }, (_, j) => ChatSocket.connect(url, users[(i + j) % users.length].accessToken)))));
	}
	return sockets;
}

export function runners(topo: Topology, sim: Simulator, users: BenchUser[], sockets: ChatSocket[]): Record<Mode, Runner> {
	return {
		direct: () => openAiStream(sim.url),
		passthrough: w => openAiStream(topo.url, users[w % users.length].apiKey),
		socket: w => sockets[w].turn(),
		sse: w => sseTurn(topo.url, users[w % users.length].accessToken)
	};
}

export async function measureLatency(
	topo: Topology,
	sim: Simulator,
	users: BenchUser[],
	sockets: ChatSocket[],
	cfg: LatencyConfig,
	onRow: (row: PointRow) => void
): Promise<PointRow[]> {
	const run = runners(topo, sim, users, sockets);
	const watched = [...topo.procs.map(p => ({ name: p.name, pid: p.pid })), { name: "simulator", pid: sim.proc.pid }];
	// Warm-up (not recorded): JIT, connection pools, caches.
	const warm = Math.min(16, Math.max(...cfg.concurrencies));
	for (const mode of MODES) await runPoint(warm, run[mode], cfg.warmup, cfg.expectedChunks);

	const rows: PointRow[] = [];
	for (let rep = 0; rep < cfg.reps; rep++) {
		for (const concurrency of cfg.concurrencies) {
			if (rep > 0 && cfg.once?.includes(concurrency)) continue;
			const modes = [...MODES];
			// Rotate the order each repetition, so neither direct nor chatmesh always runs first.
			const order = modes.map((_, i) => modes[(i + rep) % modes.length]);
			for (const mode of order) {
				const result = await runPoint(concurrency, run[mode], cfg.limits, cfg.expectedChunks, mode === "direct" ? watched.slice(-1) : watched);
				const row = { topology: topo.kind, mode, concurrency, rep, result };
				rows.push(row);
				onRow(row);
			}
		}
	}
	return rows;
}
