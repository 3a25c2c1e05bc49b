/**
 * Private Redis, NATS and PostgreSQL for fault scenarios: each on its own free port and temp dir,
 * started and stopped by the test (never the machine's shared instances), and restartable on the
 * same port with the same data directory so a scenario can take one away and bring it back.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";

const live = new Set<ChildProcess>();
process.once("exit", () => {
	for (const proc of live) proc.kill("SIGKILL");
});

/** A port nothing listens on right now (the kernel's pick, released at once). */
export function freePort(): Promise<number> {
	return new Promise((resolve, reject) => {
		const server = net.createServer();
		server.once("error", reject);
		server.listen(0, "127.0.0.1", () => {
			const address = server.address();
			const port = typeof address === "object" && address ? address.port : 0;
			server.close(() => resolve(port));
		});
	});
}

/** Resolves once something accepts TCP connections on the port, or rejects at the deadline. */
export async function portAnswers(port: number, timeoutMs: number, alive: () => boolean = () => true): Promise<void> {
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		if (!alive()) throw new Error(`the process for port ${port} exited`);
		const ok = await new Promise<boolean>(resolve => {
			const socket = net.connect({ host: "127.0.0.1", port });
			socket.once("connect", () => {
				socket.destroy();
				resolve(true);
			});
			socket.once("error", () => resolve(false));
		});
		if (ok) return;
		if (Date.now() > deadline) throw new Error(`nothing listens on port ${port} after ${timeoutMs} ms`);
		await new Promise(r => setTimeout(r, 50));
	}
}

export interface Dependency {
	name: string;
	port: number;
	url: string;
	/** Stops it gracefully (SIGTERM, or PostgreSQL's fast shutdown) and waits for the exit. */
	stop(): Promise<void>;
	/** SIGKILL, no goodbye; waits for the exit. */
	kill(): Promise<void>;
	/** Starts it again on the same port and data; resolves once it accepts connections. */
	start(): Promise<void>;
	/** Stops it for good and removes its data. */
	dispose(): Promise<void>;
	output(): string;
}

interface DaemonSpec {
	name: string;
	port: number;
	url: string;
	dir: string;
	command: string[];
	uid?: number;
	gid?: number;
	/** Signal of a graceful stop. */
	stopSignal: NodeJS.Signals;
	/** Readiness beyond an open port (PostgreSQL accepts TCP before it accepts queries). */
	ready?: () => Promise<void>;
}

function daemon(spec: DaemonSpec): Dependency {
	let proc: ChildProcess | undefined;
	let exited: Promise<void> = Promise.resolve();
	let out = "";
	const launch = async () => {
		const [cmd, ...args] = spec.command;
		const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], uid: spec.uid, gid: spec.gid, cwd: spec.dir });
		live.add(child);
		proc = child;
		child.stdout?.on("data", (b: Buffer) => (out += b.toString()));
		child.stderr?.on("data", (b: Buffer) => (out += b.toString()));
		exited = new Promise(resolve =>
			child.once("exit", () => {
				live.delete(child);
				resolve();
			})
		);
		try {
			await portAnswers(spec.port, 15_000, () => child.exitCode === null && child.signalCode === null);
			await spec.ready?.();
		} catch (err) {
			throw new Error(`${spec.name} did not start: ${err instanceof Error ? err.message : String(err)}; output:\n${out}`);
		}
	};
	const end = async (signal: NodeJS.Signals) => {
		if (proc && proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
		const deadline = new Promise<void>(resolve => setTimeout(resolve, 10_000).unref());
		await Promise.race([exited, deadline]);
		// A graceful stop that hangs becomes a kill, so a scenario's outage stays bounded.
		if (proc && proc.exitCode === null && proc.signalCode === null) {
			proc.kill("SIGKILL");
			await exited;
		}
	};
	const dep: Dependency & { launch(): Promise<void> } = {
		name: spec.name,
		port: spec.port,
		url: spec.url,
		launch,
		stop: () => end(spec.stopSignal),
		kill: () => end("SIGKILL"),
		start: launch,
		async dispose() {
			await end("SIGKILL");
			fs.rmSync(spec.dir, { recursive: true, force: true });
		},
		output: () => out
	};
	return dep;
}

function tempDir(label: string): string {
	return fs.mkdtempSync(path.join(os.tmpdir(), `chatmesh-fault-${label}-`));
}

/** A server with no users to set up: its command line names the port and data dir it gets. */
async function startServer(name: string, scheme: string, command: (port: number, dir: string) => string[]): Promise<Dependency> {
	const port = await freePort();
	const dir = tempDir(name);
	const dep = daemon({ name, port, url: `${scheme}://127.0.0.1:${port}`, dir, command: command(port, dir), stopSignal: "SIGTERM" });
	await dep.start();
	return dep;
}

export function startRedis(): Promise<Dependency> {
	return startServer("redis", "redis", (port, dir) => [
		"redis-server",
		"--port",
		String(port),
		"--bind",
		"127.0.0.1",
		"--save",
		"",
		"--appendonly",
		"no",
		"--dir",
		dir
	]);
}

export function startNats(): Promise<Dependency> {
	return startServer("nats", "nats", (port, dir) => ["/usr/sbin/nats-server", "-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dir]);
}

const PG_BIN = "/usr/lib/postgresql/15/bin";

function postgresUser(): { uid: number; gid: number } {
	const uid = Number(execFileSync("id", ["-u", "postgres"]).toString().trim());
	const gid = Number(execFileSync("id", ["-g", "postgres"]).toString().trim());
	return { uid, gid };
}

/** One initdb per test run, copied per cluster: initdb is the slow part. */
let template: string | undefined;
function pgTemplate(owner: { uid: number; gid: number }): string {
	if (template && fs.existsSync(template)) return template;
	const dir = tempDir("pgtemplate");
	fs.chownSync(dir, owner.uid, owner.gid);
	execFileSync(`${PG_BIN}/initdb`, ["-D", path.join(dir, "data"), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"], {
		uid: owner.uid,
		gid: owner.gid,
		stdio: "ignore"
	});
	template = dir;
	return dir;
}

/** Removes the initdb'd template (the suite calls it last: a test worker may end without an exit event). */
export function removePgTemplate(): void {
	if (template) fs.rmSync(template, { recursive: true, force: true });
	template = undefined;
}

/** A private PostgreSQL 15 (run as the postgres user, since tests run as root) with a `chatmesh` database. */
export async function startPostgres(): Promise<Dependency> {
	const owner = postgresUser();
	const port = await freePort();
	const dir = tempDir("pg");
	// cp -a keeps the 0700 data directory PostgreSQL insists on.
	execFileSync("cp", ["-a", path.join(pgTemplate(owner), "data"), path.join(dir, "data")]);
	execFileSync("chown", ["-R", `${owner.uid}:${owner.gid}`, dir]);
	const admin = `postgres://postgres@127.0.0.1:${port}/postgres`;
	const dep = daemon({
		name: "postgres",
		port,
		url: `postgres://postgres@127.0.0.1:${port}/chatmesh`,
		dir,
		...owner,
		command: [
			`${PG_BIN}/postgres`,
			"-D",
			path.join(dir, "data"),
			"-p",
			String(port),
			"-k",
			dir,
			"-c",
			"listen_addresses=127.0.0.1",
			"-c",
			"fsync=off",
			"-c",
			"max_connections=200"
		],
		// SIGINT is PostgreSQL's fast shutdown: sessions are ended, the data stays consistent.
		stopSignal: "SIGINT",
		async ready() {
			const deadline = Date.now() + 15_000;
			for (;;) {
				const client = new pg.Client({ connectionString: admin });
				try {
					await client.connect();
					await client.query("SELECT 1");
					return;
				} catch (err) {
					if (Date.now() > deadline) throw err;
					await new Promise(r => setTimeout(r, 100));
				} finally {
					// A connection that never opened has nothing to close: the next attempt decides.
					await client.end().catch(() => undefined);
				}
			}
		}
	});
	await dep.start();
	const client = new pg.Client({ connectionString: admin });
	await client.connect();
	try {
		await client.query("CREATE DATABASE chatmesh");
	} finally {
		await client.end();
	}
	return dep;
}
