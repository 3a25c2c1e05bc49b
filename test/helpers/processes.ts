/**
 * Real chatmesh node processes for multi-node tests: spawned with `node --import tsx server.ts`
 * (the `tsx` CLI wrapper would orphan its child when killed), their output captured, and killed
 * by pid when the test is done — also if the test runner itself exits early.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { REPO_ROOT } from "./infra";
import { waitFor } from "./wait";

export interface NodeProcess {
	proc: ChildProcess;
	pid: number;
	/** Everything the process wrote to stdout and stderr so far. */
	output(): string;
	/** Resolves with the gateway's port once the node logs that it listens. */
	httpPort(timeoutMs?: number): Promise<number>;
	/** Resolves when the output matches. */
	waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
	/** Resolves with the exit code (or signal name) once the process has exited. */
	exited: Promise<number | string>;
	kill(signal?: NodeJS.Signals): void;
}

const live = new Set<ChildProcess>();
process.once("exit", () => {
	for (const proc of live) proc.kill("SIGKILL");
});

/** Variables a spawned node inherits; everything else is given explicitly by the test. */
function baseEnv(): Record<string, string> {
	const env: Record<string, string> = { NODE_ENV: "test", LOG_LEVEL: "info", LOG_FORMAT: "text", PORT: "0" };
	for (const key of ["PATH", "HOME", "TMPDIR", "LANG"]) if (process.env[key]) env[key] = process.env[key] as string;
	return env;
}

export interface SpawnOptions {
	env?: Record<string, string>;
	/** Command and arguments; default: the chatmesh entry. */
	command?: string[];
	cwd?: string;
	/** Run in its own process group, so kill() reaches grandchildren (e.g. under npm). */
	group?: boolean;
}

export function spawnProcess(opts: SpawnOptions = {}): NodeProcess {
	const [cmd, ...args] = opts.command ?? [process.execPath, "--import", "tsx", "server.ts"];
	const proc = spawn(cmd, args, {
		cwd: opts.cwd ?? REPO_ROOT,
		env: { ...baseEnv(), ...opts.env },
		stdio: ["pipe", "pipe", "pipe"],
		detached: opts.group ?? false
	});
	if (proc.pid === undefined) throw new Error(`could not spawn ${cmd}`);
	live.add(proc);
	let out = "";
	const listeners = new Set<() => void>();
	const onData = (chunk: Buffer) => {
		out += chunk.toString();
		for (const l of listeners) l();
	};
	proc.stdout?.on("data", onData);
	proc.stderr?.on("data", onData);
	const exited = new Promise<number | string>(resolve => {
		proc.once("exit", (code, signal) => {
			live.delete(proc);
			resolve(code ?? signal ?? -1);
			for (const l of listeners) l();
		});
	});

	const waitForOutput = (pattern: RegExp, timeoutMs = 30_000) =>
		new Promise<RegExpMatchArray>((resolve, reject) => {
			const check = () => {
				const match = out.match(pattern);
				if (match) {
					done();
					resolve(match);
				} else if (proc.exitCode !== null || proc.signalCode !== null) {
					done();
					reject(new Error(`process exited before ${pattern} appeared; output:\n${out}`));
				}
			};
			const timer = setTimeout(() => {
				done();
				reject(new Error(`timed out after ${timeoutMs} ms waiting for ${pattern}; output:\n${out}`));
			}, timeoutMs);
			const done = () => {
				clearTimeout(timer);
				listeners.delete(check);
			};
			listeners.add(check);
			check();
		});

	const pid = proc.pid;
	return {
		proc,
		pid,
		output: () => out,
		waitForOutput,
		async httpPort(timeoutMs = 30_000) {
			const match = await waitForOutput(/chatmesh listening on http:\/\/[^:]+:(\d+)/, timeoutMs);
			return Number(match[1]);
		},
		exited,
		kill(signal: NodeJS.Signals = "SIGKILL") {
			if (proc.exitCode !== null || proc.signalCode !== null) return;
			try {
				if (opts.group) process.kill(-pid, signal);
				else proc.kill(signal);
			} catch {
				// already gone
			}
		}
	};
}

/** Spawns a chatmesh node with the given environment. */
export function spawnNode(env: Record<string, string>): NodeProcess {
	return spawnProcess({ env });
}

/** Polls until fn resolves truthy or the timeout passes; returns the elapsed milliseconds. */
export async function waitUntil(fn: () => Promise<boolean>, timeoutMs: number, intervalMs = 100): Promise<number> {
	const start = Date.now();
	await waitFor(fn, { timeoutMs, intervalMs });
	return Date.now() - start;
}
