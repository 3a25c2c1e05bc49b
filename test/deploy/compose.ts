/**
 * The docker-compose topology as the deploy tests see it: docker-compose.yml resolved by Debian's
 * `docker-compose config` (it runs without a container engine) against a `.env` made from
 * `.env.example` the way the README says, the property checks the file must pass, and the
 * nginx configuration copied into a prefix directory with its includes pointed at local ports.
 */
import { spawn } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parse } from "yaml";
import { REPO_ROOT } from "../helpers/infra";

export const COMPOSE_FILE = path.join(REPO_ROOT, "docker-compose.yml");
export const ENV_EXAMPLE = path.join(REPO_ROOT, ".env.example");
export const NGINX_DIR = path.join(REPO_ROOT, "deploy/nginx");
export const PROMETHEUS_CONFIG = path.join(REPO_ROOT, "deploy/prometheus/prometheus.yml");
export const GRAFANA_PROVISIONING = path.join(REPO_ROOT, "deploy/grafana/provisioning");
export const NGINX_BIN = "/usr/sbin/nginx";

/** The variables a .env must give a value: compose refuses to start without them. */
export const SECRET_VARIABLES = ["JWT_SECRET", "POSTGRES_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"] as const;

export interface Healthcheck {
	test?: string[] | string;
	interval?: string;
	timeout?: string;
	retries?: number;
	start_period?: string;
	disable?: boolean;
}

export interface ComposeService {
	image?: string;
	build?: unknown;
	command?: string[] | string;
	environment?: Record<string, string | null>;
	env_file?: string[] | string;
	healthcheck?: Healthcheck;
	depends_on?: Record<string, { condition?: string }> | string[];
	volumes?: Array<string | { type?: string; source?: string; target?: string }>;
	ports?: Array<string | { published?: string | number; target?: number; host_ip?: string }>;
	profiles?: string[];
}

export interface ComposeFile {
	services: Record<string, ComposeService>;
	volumes?: Record<string, unknown>;
}

const tempDirs: string[] = [];

/** A fresh directory under the system's temp dir, removed by removeTempDirs(). */
export function tempDir(label: string): string {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), `chatmesh-${label}-`));
	tempDirs.push(dir);
	return dir;
}

/** Removes every directory tempDir() made (afterAll). */
export function removeTempDirs(): void {
	for (const dir of tempDirs.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
}

/** A process environment with nothing of the caller's: compose would interpolate from it first. */
function cleanEnv(): Record<string, string> {
	return { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/root", LANG: "C.UTF-8" };
}

/** `.env.example` as an operator fills it in: every secret a fresh random URL-safe value. */
export function filledEnvFile(overrides: Record<string, string> = {}): string {
	const values: Record<string, string> = {};
	for (const name of SECRET_VARIABLES) values[name] = crypto.randomBytes(24).toString("hex");
	Object.assign(values, overrides);
	const seen = new Set<string>();
	const lines = fs
		.readFileSync(ENV_EXAMPLE, "utf8")
		.split("\n")
		.map(line => {
			const name = /^([A-Z][A-Z0-9_]*)=/.exec(line)?.[1];
			if (!name || !(name in values)) return line;
			seen.add(name);
			return `${name}=${values[name]}`;
		});
	for (const [name, value] of Object.entries(values)) if (!seen.has(name)) lines.push(`${name}=${value}`);
	return lines.join("\n");
}

/** A project directory holding a copy of the compose file and the given .env. */
export function composeProject(envFile: string, composeText = fs.readFileSync(COMPOSE_FILE, "utf8")): string {
	const dir = tempDir("compose");
	fs.writeFileSync(path.join(dir, "docker-compose.yml"), composeText);
	fs.writeFileSync(path.join(dir, ".env"), envFile);
	return dir;
}

export interface CommandResult {
	code: number;
	stdout: string;
	stderr: string;
}

/**
 * Runs a command to its end, bounded in time; a non-zero exit is a result, not a throw. With
 * `stdoutTo`, its stdout goes to that file: nginx opens /dev/stdout for its access log, which
 * works for a file or a terminal but not for the socket Node gives a child as a pipe.
 */
export function runCommand(
	cmd: string,
	args: string[],
	opts: { cwd?: string; timeoutMs?: number; stdoutTo?: string; env?: Record<string, string> } = {}
): Promise<CommandResult> {
	return new Promise(resolve => {
		const out = opts.stdoutTo ? fs.openSync(opts.stdoutTo, "a") : "pipe";
		const child = spawn(cmd, args, { cwd: opts.cwd, env: { ...cleanEnv(), ...opts.env }, stdio: ["ignore", out, "pipe"] });
		if (typeof out === "number") fs.closeSync(out);
		let stdout = "";
		let stderr = "";
		child.stdout?.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
		child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
		const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 30_000);
		child.once("error", err => {
			clearTimeout(timer);
			resolve({ code: 127, stdout, stderr: err.message });
		});
		child.once("close", (code, signal) => {
			clearTimeout(timer);
			resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
		});
	});
}

/** `docker-compose config` in the project: the file as compose resolves it (anchors, interpolation). */
export async function resolvedCompose(projectDir: string): Promise<ComposeFile> {
	const result = await runCommand("docker-compose", ["config"], { cwd: projectDir });
	if (result.code !== 0) throw new Error(`docker-compose config failed: ${result.stderr}`);
	return parse(result.stdout) as ComposeFile;
}

/** Services run from the chatmesh image (the Dockerfile's build). */
export function chatmeshServices(file: ComposeFile): string[] {
	return Object.entries(file.services)
		.filter(([, s]) => s.image?.startsWith("chatmesh:"))
		.map(([name]) => name);
}

/** chatmesh nodes: chatmesh-image services that run the server (SERVICES set), not the simulator. */
export function chatmeshNodes(file: ComposeFile): string[] {
	return chatmeshServices(file).filter(name => file.services[name].environment?.SERVICES);
}

function dependsOn(service: ComposeService): Array<[string, string | undefined]> {
	const deps = service.depends_on;
	if (!deps) return [];
	if (Array.isArray(deps)) return deps.map(name => [name, undefined]);
	return Object.entries(deps).map(([name, d]) => [name, d.condition]);
}

function healthcheckCommand(service: ComposeService): string {
	const test = service.healthcheck?.test;
	return Array.isArray(test) ? test.join(" ") : (test ?? "");
}

const SECRET_NAME = /SECRET|PASSWORD|TOKEN|API_KEY/;

/**
 * What is wrong with a resolved compose file, one line per problem (empty: nothing). `raw` is
 * the file as written, before interpolation, for the checks on literals.
 */
export function composeProblems(file: ComposeFile, raw: ComposeFile): string[] {
	const problems: string[] = [];
	for (const [name, service] of Object.entries(file.services)) {
		const test = service.healthcheck?.test;
		if (!test || service.healthcheck?.disable || (Array.isArray(test) && test[0] === "NONE")) problems.push(`${name}: no healthcheck`);
		for (const [dep, condition] of dependsOn(service)) {
			if (condition !== "service_healthy") problems.push(`${name}: depends_on ${dep} without condition service_healthy`);
			if (!file.services[dep]) problems.push(`${name}: depends_on unknown service ${dep}`);
		}
		for (const volume of service.volumes ?? []) {
			const v = typeof volume === "string" ? { source: volume.split(":")[0], target: volume.split(":")[1] } : volume;
			const source = v.source ?? "";
			// State lives in named volumes; bind mounts only bring configuration in, read-only.
			if (source && !source.startsWith("/") && !source.startsWith(".") && !file.volumes?.[source]) problems.push(`${name}: volume ${source} is not declared`);
		}
	}
	for (const name of chatmeshNodes(file)) {
		const env = file.services[name].environment ?? {};
		const check = healthcheckCommand(file.services[name]);
		if (env.SERVICES === "gateway") {
			if (!env.PORT || !/process\.env\.PORT\+'\/ready'/.test(check)) problems.push(`${name}: gateway healthcheck must hit /ready on PORT`);
		} else if (!env.HEALTH_PORT || !/process\.env\.HEALTH_PORT\+'\/ready'/.test(check)) problems.push(`${name}: healthcheck must hit /ready on HEALTH_PORT`);
		if (!env.NODE_ID) problems.push(`${name}: no NODE_ID`);
		if (env.METRICS_HOST !== "0.0.0.0" || !env.METRICS_PORT) problems.push(`${name}: metrics must listen on 0.0.0.0:METRICS_PORT for Prometheus`);
	}
	const ids = chatmeshNodes(file).map(name => file.services[name].environment?.NODE_ID);
	if (new Set(ids).size !== ids.length) problems.push(`NODE_ID values repeat: ${ids.join(", ")}`);
	// Secrets only ever come from .env: written in the file, each is an interpolation.
	for (const [name, service] of Object.entries(raw.services)) {
		for (const [key, value] of Object.entries(service.environment ?? {})) {
			if (typeof value !== "string") continue;
			if (SECRET_NAME.test(key) && !/^\$\{[A-Z0-9_]+(:?[-?][^}]*)?\}$/.test(value)) problems.push(`${name}: ${key} is a literal, not from .env`);
			const password = /^[a-z]+:\/\/[^/:@]*:([^@]*)@/.exec(value)?.[1];
			if (password !== undefined && !password.startsWith("${")) problems.push(`${name}: ${key} holds a literal password`);
		}
	}
	return problems;
}

/** The compose file as written (anchors and merge keys resolved, no interpolation). */
export function rawCompose(text = fs.readFileSync(COMPOSE_FILE, "utf8")): ComposeFile {
	return parse(text, { merge: true }) as ComposeFile;
}

/** Variables lib/config.ts reads (every read goes through read(env, …) or parseWith(env, …)). */
export function configVariables(): string[] {
	const source = fs.readFileSync(path.join(REPO_ROOT, "lib/config.ts"), "utf8");
	return [...new Set([...source.matchAll(/\b(?:read|parseWith)\(\s*env,\s*"([A-Z][A-Z0-9_]*)"/g)].map(m => m[1]))];
}

/** `.env.example`'s variables: the ones given a value and the ones listed in comments. */
export function envExampleVariables(text = fs.readFileSync(ENV_EXAMPLE, "utf8")): { active: Map<string, string>; listed: Set<string> } {
	const active = new Map<string, string>();
	const listed = new Set<string>();
	for (const line of text.split("\n")) {
		const set = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
		if (set) {
			active.set(set[1], set[2]);
			listed.add(set[1]);
		}
		const commented = /^#\s*([A-Z][A-Z0-9_]*)=/.exec(line);
		if (commented) listed.add(commented[1]);
	}
	return { active, listed };
}

export interface NginxPrefix {
	dir: string;
	conf: string;
}

/**
 * The repo's nginx configuration in a fresh prefix directory: nginx.conf as it is, its
 * gateways.conf with each compose address (`gateway-1:3000`) replaced by a local one, and a
 * listen.conf for the given port. Throws when an address to replace is not in the file.
 */
export function nginxPrefix(gateways: Record<string, string>, listenPort: number, files: { nginxConf?: string } = {}): NginxPrefix {
	const dir = tempDir("nginx");
	const conf = path.join(dir, "nginx.conf");
	fs.writeFileSync(conf, files.nginxConf ?? fs.readFileSync(path.join(NGINX_DIR, "nginx.conf"), "utf8"));
	let upstreams = fs.readFileSync(path.join(NGINX_DIR, "gateways.conf"), "utf8");
	for (const [from, to] of Object.entries(gateways)) {
		if (!upstreams.includes(from)) throw new Error(`deploy/nginx/gateways.conf names no ${from}`);
		upstreams = upstreams.replaceAll(from, to);
	}
	fs.writeFileSync(path.join(dir, "gateways.conf"), upstreams);
	fs.writeFileSync(path.join(dir, "listen.conf"), `listen 127.0.0.1:${listenPort};\n`);
	return { dir, conf };
}

/** `nginx -t` on a prefix: the exact check the README lists. */
export function nginxTest(prefix: NginxPrefix): Promise<CommandResult> {
	return runCommand(NGINX_BIN, ["-t", "-p", `${prefix.dir}/`, "-c", prefix.conf], { stdoutTo: path.join(prefix.dir, "stdout.log") });
}

/** nginx.conf without its comments, for checks on its directives. */
export function nginxDirectives(text = fs.readFileSync(path.join(NGINX_DIR, "nginx.conf"), "utf8")): string {
	return text
		.split("\n")
		.map(line => line.replace(/(^|\s)#.*$/, ""))
		.join("\n");
}

/** chatmesh nodes (`name:METRICS_PORT`) that no static scrape target of a prometheus.yml names. */
export function unscrapedNodes(file: ComposeFile, prometheusYaml: string): string[] {
	const prometheus = parse(prometheusYaml) as { scrape_configs?: Array<{ static_configs?: Array<{ targets?: string[] }> }> };
	const targets = new Set((prometheus.scrape_configs ?? []).flatMap(c => (c.static_configs ?? []).flatMap(s => s.targets ?? [])));
	return chatmeshNodes(file)
		.map(name => `${name}:${file.services[name].environment?.METRICS_PORT}`)
		.filter(target => !targets.has(target));
}
