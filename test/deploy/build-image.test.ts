import { execFile } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { type Copy, DockerfileParser, type Env, type Instruction } from "dockerfile-ast";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../faults/deps";
import { withProcesses } from "../helpers/fixtures";
import { REPO_ROOT, TEST_JWT_SECRET } from "../helpers/infra";
import { spawnProcess } from "../helpers/processes";
import { waitFor } from "../helpers/wait";

// No container engine runs here, so the Dockerfile is checked by reading it: the runtime stage's
// base, user, health check, dependencies and command, and — by replaying the build stage's
// COPYs into an empty directory and running its build there — that the build stage has every
// file `npm run build` needs and produces every file the runtime stage copies and runs.
const run = promisify(execFile);
const cluster = withProcesses({ label: "image", dataDir: true });
const text = fs.readFileSync(path.join(REPO_ROOT, "Dockerfile"), "utf8");
const dockerfile = DockerfileParser.parse(text);

interface Stage {
	image: string;
	name: string | null;
	instructions: Instruction[];
}

function stages(): Stage[] {
	const result: Stage[] = [];
	for (const instruction of dockerfile.getInstructions()) {
		if (instruction.getKeyword() === "FROM") {
			const args = instruction.getArguments().map(a => a.getValue());
			const as = args.findIndex(a => a.toUpperCase() === "AS");
			result.push({ image: args[0], name: as >= 0 ? args[as + 1] : null, instructions: [] });
		} else result.at(-1)?.instructions.push(instruction);
	}
	return result;
}

const all = stages();
const final = all[all.length - 1];
const buildStage = all.find(s => s.name === "build");
const of = (stage: Stage, keyword: string) => stage.instructions.filter(i => i.getKeyword() === keyword);
const args = (i: Instruction) => i.getArguments().map(a => a.getValue());
/** An exec-form instruction's command (["node", "x"] → node, x). */
const execForm = (i: Instruction): string[] => JSON.parse(i.getArgumentsContent() ?? "[]") as string[];

/** COPY --from=<stage>, or null for a copy from the build context. */
const copyFrom = (i: Instruction) => (i as Copy).getFromFlag()?.getValue() ?? null;

/** WORKDIR of the stage (the paths COPY writes to are relative to it). */
const workdir = (stage: Stage) => args(of(stage, "WORKDIR").at(-1) as Instruction)[0];

describe("Dockerfile", () => {
	it("runs on node:22-slim in the final stage, built in an earlier stage", () => {
		expect(all.length).toBeGreaterThanOrEqual(2);
		expect(final.image).toBe("node:22-slim");
		expect(buildStage?.image).toBe("node:22-slim");
	});

	it("runs as a user that is not root", () => {
		const users = of(final, "USER").map(i => args(i)[0]);
		expect(users.length).toBeGreaterThan(0);
		const user = users.at(-1) as string;
		expect(["root", "0"]).not.toContain(user.split(":")[0]);
	});

	it("installs production dependencies only in the final stage and never runs TypeScript there", () => {
		const installs = of(final, "RUN")
			.map(i => i.getArgumentsContent() ?? "")
			.filter(cmd => /\bnpm (ci|install|i)\b/.test(cmd));
		expect(installs.length).toBeGreaterThan(0);
		for (const cmd of installs) expect(cmd).toMatch(/--omit=dev/);
		for (const i of final.instructions) expect(i.getArgumentsContent() ?? "").not.toMatch(/\btsx\b|\btsc\b|npm run build/);
		// tsx and esbuild are build tools: npm ci --omit=dev must leave them out.
		const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, "package.json"), "utf8")) as { dependencies: Record<string, string> };
		expect(Object.keys(pkg.dependencies)).not.toContain("tsx");
		expect(Object.keys(pkg.dependencies)).not.toContain("esbuild");
	});

	it("starts dist/server.js with node, and checks health with node's fetch (no curl)", () => {
		const cmds = of(final, "CMD");
		expect(cmds).toHaveLength(1);
		const cmd = execForm(cmds[0]);
		expect(cmd[0]).toBe("node");
		expect(cmd.at(-1)).toBe("dist/server.js");
		expect(of(final, "ENTRYPOINT")).toHaveLength(0);

		const healthchecks = of(final, "HEALTHCHECK");
		expect(healthchecks).toHaveLength(1);
		const check = healthchecks[0].getArgumentsContent() ?? "";
		expect(check).not.toMatch(/curl|wget/);
		expect(check).toMatch(/CMD \["node", "dist\/healthcheck\.js"\]/);
	});

	it("exposes the ports its environment sets (PORT for the gateway, HEALTH_PORT for any role)", () => {
		const env = new Map<string, string>();
		for (const i of of(final, "ENV")) for (const p of (i as Env).getProperties()) env.set(p.getName(), p.getValue() ?? "");
		const exposed = of(final, "EXPOSE").flatMap(i => args(i).map(a => a.split("/")[0]));
		expect(env.get("PORT")).toBeDefined();
		expect(env.get("HEALTH_PORT")).toBeDefined();
		expect(exposed).toContain(env.get("PORT"));
		expect(exposed).toContain(env.get("HEALTH_PORT"));
		expect(env.get("NODE_ENV")).toBe("production");
	});

	it("copies the web app into the final image, and every file it copies from the context exists", () => {
		const local = of(final, "COPY").filter(i => copyFrom(i) === null);
		const sources = local.flatMap(i => args(i).slice(0, -1));
		expect(sources).toContain("public");
		for (const src of sources) expect(fs.existsSync(path.join(REPO_ROOT, src)), src).toBe(true);
	});

	it(".dockerignore keeps secrets, dependencies and build output out of the context, and nothing the Dockerfile copies", () => {
		const ignored = fs
			.readFileSync(path.join(REPO_ROOT, ".dockerignore"), "utf8")
			.split("\n")
			.map(l => l.trim())
			.filter(l => l && !l.startsWith("#"));
		for (const entry of [".git", "node_modules", "dist", ".env", "data"]) expect(ignored).toContain(entry);
		const copied = all.flatMap(stage =>
			of(stage, "COPY")
				.filter(i => copyFrom(i) === null)
				.flatMap(i => args(i).slice(0, -1))
		);
		for (const src of copied) expect(ignored, src).not.toContain(src);
	});
});

describe("the build stage, replayed in an empty directory, and the final stage run on it", () => {
	let dir: string;
	beforeAll(async () => {
		dir = fs.mkdtempSync(path.join(os.tmpdir(), "chatmesh-image-"));
		if (!buildStage) throw new Error("no build stage");
		for (const copy of of(buildStage, "COPY")) {
			const parts = args(copy);
			const dest = parts.at(-1) as string;
			for (const src of parts.slice(0, -1)) {
				const target = dest.endsWith("/") ? path.join(dir, dest, path.basename(src)) : path.join(dir, dest);
				fs.cpSync(path.join(REPO_ROOT, src), target, { recursive: true });
			}
		}
		// `npm ci` of the stage: the repository's own dependencies stand in for it.
		fs.symlinkSync(path.join(REPO_ROOT, "node_modules"), path.join(dir, "node_modules"), "dir");
		const builds = of(buildStage, "RUN").filter(i => /npm run build/.test(i.getArgumentsContent() ?? ""));
		expect(builds).toHaveLength(1);
		await run("npm", ["run", "build"], { cwd: dir, timeout: 60_000 });
	}, 90_000);
	afterAll(() => {
		if (dir) fs.rmSync(dir, { recursive: true, force: true });
	});

	it("produces everything the final stage copies from it and everything its CMD and HEALTHCHECK run", async () => {
		const buildWorkdir = buildStage ? workdir(buildStage) : "/app";
		const fromBuild = of(final, "COPY").filter(i => copyFrom(i) === "build");
		expect(fromBuild.length).toBeGreaterThan(0);
		for (const copy of fromBuild) {
			const src = args(copy)[0];
			expect(fs.existsSync(path.join(dir, path.relative(buildWorkdir, src))), src).toBe(true);
		}
		expect(fs.existsSync(path.join(dir, execForm(of(final, "CMD")[0]).at(-1) as string))).toBe(true);
		expect(fs.existsSync(path.join(dir, "dist", "healthcheck.js"))).toBe(true);
		expect(fs.readdirSync(path.join(dir, "dist", "migrations")).filter(f => f.endsWith(".js")).length).toBe(
			fs.readdirSync(path.join(REPO_ROOT, "migrations")).filter(f => /^[0-9].*\.ts$/.test(f)).length
		);

		// The health check runs as built and says what is wrong when there is nothing to probe.
		const probe = await run(process.execPath, ["dist/healthcheck.js"], {
			cwd: dir,
			env: { PATH: process.env.PATH ?? "", SERVICES: "llm", TRANSPORTER: "nats://127.0.0.1:4222" },
			timeout: 20_000
		}).then(
			() => ({ code: 0, stderr: "" }),
			(err: { code: number; stderr: string }) => err
		);
		expect(probe.code).toBe(1);
		expect(probe.stderr).toMatch(/HEALTH_PORT is unset/);
	}, 60_000);

	it("starts on the image's environment (plus JWT_SECRET) and its HEALTHCHECK passes, then SIGTERM exits 0", async () => {
		// The image's ENV, with the ports moved to free ones and the data directory to a temporary one.
		const env: Record<string, string> = {};
		for (const i of of(final, "ENV")) for (const p of (i as Env).getProperties()) env[p.getName()] = p.getValue() ?? "";
		const [port, healthPort] = [await freePort(), await freePort()];
		Object.assign(env, { PORT: String(port), HEALTH_PORT: String(healthPort), DATA_DIR: cluster.dataDir, JWT_SECRET: TEST_JWT_SECRET });
		const [cmd, ...cmdArgs] = execForm(of(final, "CMD")[0]);
		expect(cmd).toBe("node");
		const proc = spawnProcess({ command: [process.execPath, ...cmdArgs], cwd: dir, env });
		cluster.procs.push(proc);
		expect(await proc.httpPort(40_000)).toBe(port);

		const check = execForm({ getArgumentsContent: () => (of(final, "HEALTHCHECK")[0].getArgumentsContent() ?? "").replace(/^.*?CMD\s+/, "") } as Instruction);
		expect(check[0]).toBe("node");
		const healthcheck = () =>
			run(process.execPath, check.slice(1), { cwd: dir, env: { PATH: process.env.PATH ?? "", ...env }, timeout: 20_000 }).then(
				() => 0,
				(err: { code: number }) => err.code
			);
		await waitFor(async () => (await healthcheck()) === 0, { timeoutMs: 30_000, intervalMs: 500, what: "HEALTHCHECK passing" });
		expect((await fetch(`http://127.0.0.1:${healthPort}/health`)).status).toBe(200);

		proc.kill("SIGTERM");
		expect(await proc.exited).toBe(0);
		expect(await healthcheck()).toBe(1);
	}, 80_000);
});
