/**
 * Where the files chatmesh reads at run time are: the web app (public/) and the migrations. From
 * source (tsx, vitest) this file sits in lib/; in the production build it is bundled into
 * dist/<entry>.js. Both are one level below the application root, so the root is found the same
 * way; only the migrations differ (compiled to dist/migrations/*.js by `npm run build`).
 */
import path from "node:path";

/** Replaced by `true` in the production build (esbuild --define, see scripts/build.ts). */
declare const CHATMESH_BUILD: boolean | undefined;

export const IS_BUILD = typeof CHATMESH_BUILD !== "undefined" && CHATMESH_BUILD;

export const APP_ROOT = path.resolve(import.meta.dirname, "..");

export const PUBLIC_DIR = path.join(APP_ROOT, "public");

/** The migrations folder and the pattern of its migration files (the name's stem is the migration's name). */
export const MIGRATIONS = IS_BUILD
	? { dir: path.join(APP_ROOT, "dist", "migrations"), pattern: "[0-9]*.js" }
	: { dir: path.join(APP_ROOT, "migrations"), pattern: "[0-9]*.ts" };
