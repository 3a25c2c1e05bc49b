/**
 * `npm run build`: the production build. Each entry is bundled with esbuild into one plain ESM
 * file in dist/ (the sources import without extensions, which Node's ESM loader does not
 * resolve, so per-file tsc output would not run); packages stay external and come from
 * node_modules at run time. Migrations are compiled one file each into dist/migrations, where
 * lib/app-files.ts finds them in the build. No TypeScript runs in production.
 *   dist/server.js      the chatmesh node (`npm run start:prod`, the image's CMD)
 *   dist/simulator.js   the inference simulator
 *   dist/repl.js        the cluster REPL
 *   dist/healthcheck.js the image's HEALTHCHECK
 */
import fs from "node:fs";
import path from "node:path";
import { build, type BuildOptions } from "esbuild";

const root = path.resolve(import.meta.dirname, "..");
const outdir = path.join(root, "dist");

const common: BuildOptions = {
	bundle: true,
	platform: "node",
	format: "esm",
	target: "node22",
	packages: "external",
	sourcemap: "linked",
	logLevel: "warning",
	absWorkingDir: root,
	// lib/app-files.ts: where public/ and the migrations are in the build.
	define: { CHATMESH_BUILD: "true" }
};

fs.rmSync(outdir, { recursive: true, force: true });

const migrations = fs
	.readdirSync(path.join(root, "migrations"))
	.filter(f => /^[0-9].*\.ts$/.test(f))
	.map(f => path.join("migrations", f));

await Promise.all([
	build({
		...common,
		entryPoints: { server: "server.ts", simulator: "simulator/main.ts", repl: "scripts/repl.ts", healthcheck: "scripts/healthcheck.ts" },
		outdir
	}),
	build({ ...common, entryPoints: migrations, outdir: path.join(outdir, "migrations") })
]);

const built = fs.readdirSync(outdir, { recursive: true, encoding: "utf8" }).filter(f => f.endsWith(".js"));
process.stdout.write(`built ${built.length} files into dist/: ${built.sort().join(", ")}\n`);
