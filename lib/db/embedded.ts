/**
 * The embedded database: PGlite (PostgreSQL compiled to WASM) with its data under the data
 * directory, served on a loopback port over the PostgreSQL wire protocol so that `pg` reaches it
 * exactly as it reaches a real server.
 */
import fs from "node:fs/promises";
import path from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";

export interface EmbeddedDatabase {
	/** postgres://…@127.0.0.1:port/postgres, for pg. */
	url: string;
	close(): Promise<void>;
}

export async function startEmbeddedDatabase(dataDir: string): Promise<EmbeddedDatabase> {
	const dir = path.join(dataDir, "pglite");
	await fs.mkdir(dir, { recursive: true });
	const db = await PGlite.create({ dataDir: dir });
	// PGlite is one PostgreSQL session; the server queues queries from its connections into it.
	// Callers keep their pools at one connection so transactions never interleave.
	const server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0, maxConnections: 4 });
	await server.start();
	const conn = server.getServerConn(); // "127.0.0.1:PORT"
	return {
		url: `postgres://postgres@${conn}/postgres?sslmode=disable`,
		async close() {
			await server.stop();
			await db.close();
		}
	};
}
