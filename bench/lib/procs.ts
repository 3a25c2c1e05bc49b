/**
 * Processes for benchmarks: spawned pinned to a CPU (taskset) with a raised descriptor limit,
 * their output kept (last 64 KiB), killed by pid when the run ends — also on errors and signals.
 * CPU time and RSS come from /proc.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";

export const REPO_ROOT = path.resolve(import.meta.dirname, "../..");
/** The chatmesh tree whose server.ts is benchmarked (a scratch copy can be measured against this one). */
export const CHATMESH_DIR = process.env.BENCH_CHATMESH_DIR ? path.resolve(process.env.BENCH_CHATMESH_DIR) : REPO_ROOT;

const CLK_TCK = 100; // getconf CLK_TCK on Linux x86_64
const OUTPUT_KEEP = 64 * 1024;

export interface Proc {
	name: string;
	pid: number;
	child: ChildProcess;
	output(): string;
	waitFor(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
	/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
	stop(graceMs?: number): Promise<void>;
	exited: Promise<number | string>;
}

const live = new Map<number, ChildProcess>();
function killAll(): void {
	for (const [pid, child] of live) {
		if (child.exitCode === null && child.signalCode === null) {
			try {
				process.kill(pid, "SIGKILL");
			} catch {
				// gone already
			}
		}
	}
}
process.once("exit", killAll);
for (const signal of ["SIGINT", "SIGTERM"] as const)
	process.once(signal, () => {
		killAll();
		process.exit(130);
	});

/** Variables every spawned process gets; the rest is given explicitly. */
export function baseEnv(): Record<string, string> {
	const env: Record<string, string> = {};
	for (const key of ["PATH", "HOME", "TMPDIR", "LANG"]) if (process.env[key]) env[key] = process.env[key] as string;
	return env;
}

export interface SpawnOptions {
	name: string;
	/** Node arguments (script and its flags); the process is `node …args`. */
	args: string[];
	env: Record<string, string>;
	cwd?: string;
	/** CPU list for taskset, e.g. "1"; undefined: inherit this process's affinity. */
	cpu?: string;
	/** Open-files limit set in the shell before exec. */
	nofile?: number;
}

export function spawnNode(opts: SpawnOptions): Proc {
	const pin = opts.cpu !== undefined ? `taskset -c ${opts.cpu} ` : "";
	// `exec` keeps the pid: sh becomes taskset becomes node.
	const script = `ulimit -n ${opts.nofile ?? 65536} 2>/dev/null || ulimit -n $(ulimit -Hn); exec ${pin}"$0" "$@"`;
	const child = spawn("sh", ["-c", script, process.execPath, ...opts.args], {
		cwd: opts.cwd ?? CHATMESH_DIR,
		env: opts.env,
		stdio: ["ignore", "pipe", "pipe"]
	});
	if (child.pid === undefined) throw new Error(`could not spawn ${opts.name}`);
	const pid = child.pid;
	live.set(pid, child);
	let out = "";
	const listeners = new Set<() => void>();
	const onData = (chunk: Buffer) => {
		out += chunk.toString();
		if (out.length > OUTPUT_KEEP * 2) out = out.slice(-OUTPUT_KEEP);
		for (const l of listeners) l();
	};
	child.stdout?.on("data", onData);
	child.stderr?.on("data", onData);
	const exited = new Promise<number | string>(resolve =>
		child.once("exit", (code, signal) => {
			live.delete(pid);
			for (const l of listeners) l();
			resolve(code ?? signal ?? -1);
		})
	);
	const gone = () => child.exitCode !== null || child.signalCode !== null;

	const waitFor = (pattern: RegExp, timeoutMs = 60_000) =>
		new Promise<RegExpMatchArray>((resolve, reject) => {
			const check = () => {
				const match = out.match(pattern);
				if (match) finish(() => resolve(match));
				else if (gone()) finish(() => reject(new Error(`${opts.name} exited before ${pattern}; output:\n${out.slice(-4000)}`)));
			};
			const timer = setTimeout(
				() => finish(() => reject(new Error(`${opts.name}: no ${pattern} within ${timeoutMs} ms; output:\n${out.slice(-4000)}`))),
				timeoutMs
			);
			const finish = (settle: () => void) => {
				clearTimeout(timer);
				listeners.delete(check);
				settle();
			};
			listeners.add(check);
			check();
		});

	return {
		name: opts.name,
		pid,
		child,
		output: () => out,
		waitFor,
		exited,
		async stop(graceMs = 3000) {
			if (gone()) return;
			try {
				process.kill(pid, graceMs > 0 ? "SIGTERM" : "SIGKILL");
			} catch {
				return;
			}
			const timer = setTimeout(() => {
				try {
					process.kill(pid, "SIGKILL");
				} catch {
					// gone
				}
			}, graceMs);
			await exited;
			clearTimeout(timer);
		}
	};
}

/** User + system CPU time of a process (all its threads), in milliseconds. */
export function cpuMs(pid: number): number {
	const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
	const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
	// fields[0] is field 3 (state): utime is field 14, stime field 15.
	return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

/**
 * CPU time of every thread of a process, in ms, from the scheduler's nanosecond counters
 * (/proc/<pid>/task/<tid>/schedstat): a few percent is below the 10 ms tick of /proc/<pid>/stat
 * over a round of a few hundred milliseconds of CPU.
 */
export function threadCpuMs(pid: number): number {
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

/** Resident set size of a process, in bytes. */
export function rssBytes(pid: number): number {
	const status = readFileSync(`/proc/${pid}/status`, "utf8");
	const match = /VmRSS:\s+(\d+)\s+kB/.exec(status);
	return match ? Number(match[1]) * 1024 : Number.NaN;
}

/** Pins this process (every thread) to a CPU list, so child processes inherit it; false when taskset failed. */
export function pinSelf(cpu: string): boolean {
	const result = spawnSync("taskset", ["-a", "-c", "-p", cpu, String(process.pid)], { stdio: "ignore" });
	return result.status === 0;
}

export const sleep = (ms: number) => new Promise<void>(resolve => setTimeout(resolve, ms));
