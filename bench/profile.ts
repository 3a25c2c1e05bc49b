/**
 * CPU profile of chatmesh under one benchmark load, for finding where a missed target's time goes:
 *
 *   node --import tsx bench/profile.ts [embedded|cluster] [passthrough|socket|sse] [concurrency] [seconds]
 *
 * Starts the simulator and the topology with `--inspect=127.0.0.1:0`, warms up, then profiles
 * every chatmesh process during the load only. Writes bench/out/profiles/*.cpuprofile (open them
 * in Chrome DevTools) and prints the top self-time functions and code locations of each process.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { signUpUsers, startCluster, startEmbedded, startSimulator } from "./lib/chatmesh";
import { summarizeProfile } from "./lib/cpuprofile";
import { attachProfiler } from "./lib/inspector";
import { runPoint } from "./lib/load";
import { CHATMESH_DIR, pinSelf, REPO_ROOT } from "./lib/procs";
import { round } from "./lib/stats";
import { table } from "./lib/table";
import { openSockets, runners, type Mode } from "./latency";

const [kind = "embedded", mode = "passthrough", c = "64", s = "5"] = process.argv.slice(2);
if (!["embedded", "cluster"].includes(kind) || !["passthrough", "socket", "sse", "direct"].includes(mode)) {
	process.stderr.write("usage: bench/profile.ts [embedded|cluster] [passthrough|socket|sse] [concurrency] [seconds]\n");
	process.exit(2);
}
const concurrency = Number(c);
const seconds = Math.min(60, Number(s));
const KNOBS = { ttftMs: 50, tokenIntervalMs: 5, outputTokens: 64 };

async function main(): Promise<void> {
	pinSelf("0");
	const sim = await startSimulator(KNOBS, "0");
	try {
		const topo = await (kind === "cluster" ? startCluster : startEmbedded)({ simulatorUrl: sim.url, cpu: "1", nodeArgs: ["--inspect=127.0.0.1:0"] });
		try {
			const profilers = await Promise.all(topo.procs.map(p => attachProfiler(p)));
			const users = await signUpUsers(topo.url, 32);
			const sockets = mode === "socket" ? await openSockets(topo.url, users, concurrency) : [];
			const run = runners(topo, sim, users, sockets)[mode as Mode];
			await runPoint(Math.min(concurrency, 16), run, { minMs: 1500, minStreams: 32, maxMs: 6000 }, KNOBS.outputTokens); // warm-up
			await Promise.all(profilers.map(p => p.start()));
			const watched = topo.procs.map(p => ({ name: p.name, pid: p.pid }));
			const point = await runPoint(concurrency, run, { minMs: seconds * 1000, minStreams: 0, maxMs: seconds * 1000 }, KNOBS.outputTokens, watched);
			const profiles = await Promise.all(profilers.map(p => p.stop()));
			for (const p of profilers) p.close();
			for (const sock of sockets) sock.close();

			process.stdout.write(
				`${kind} ${mode} c=${concurrency}: ${point.streams} streams, ${point.errors} errors, TTFT p50 ${round(point.ttft.p50)} p99 ${round(point.ttft.p99)} ms, gap p99 ${round(point.gap.p99)} ms, ` +
					`${round(point.throughput, 1)} streams/s; CPU ms/stream ${JSON.stringify(Object.fromEntries(Object.entries(point.cpuPerStream).map(([k, v]) => [k, round(v)])))} (measured under the profiler)\n`
			);
			const dir = path.join(REPO_ROOT, "bench", "out", "profiles");
			mkdirSync(dir, { recursive: true });
			topo.procs.forEach((proc, i) => {
				const file = path.join(dir, `${kind}-${mode}-c${concurrency}-${proc.name}.cpuprofile`);
				writeFileSync(file, JSON.stringify(profiles[i]));
				const summary = summarizeProfile(profiles[i], CHATMESH_DIR, 25);
				// Sampled time counts waiting for the CPU too (processes share a core): shares are reliable,
				// so ms per stream is a share of the CPU per stream /proc measured for this process.
				const perStream = (share: number) => share * point.cpuPerStream[proc.name];
				process.stdout.write(`\n## ${proc.name}: busy ${round(summary.busyMs)} of ${round(summary.totalMs)} ms (${path.relative(REPO_ROOT, file)})\n`);
				process.stdout.write(
					`${table(
						"Top self time by function",
						["function", "sampled ms", "% busy", "CPU ms/stream"],
						summary.functions.map(f => [f.name, round(f.ms), round(f.share * 100, 1), round(perStream(f.share), 3)])
					)}\n`
				);
				process.stdout.write(
					`${table(
						"Self time by code location",
						["where", "sampled ms", "% busy", "CPU ms/stream"],
						summary.groups.slice(0, 15).map(g => [g.name, round(g.ms), round(g.share * 100, 1), round(perStream(g.share), 3)])
					)}\n`
				);
			});
		} finally {
			await topo.stop();
		}
	} finally {
		await sim.stop();
	}
}

main().then(
	() => process.exit(0),
	(err: unknown) => {
		process.stderr.write(`profile failed: ${(err as Error).stack ?? String(err)}\n`);
		process.exit(1);
	}
);
