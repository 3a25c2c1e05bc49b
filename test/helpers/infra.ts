/**
 * Where the test suite finds the real PostgreSQL, Redis and NATS, and per-file isolation on
 * them: a Moleculer namespace (which also prefixes Redis keys) and a database created and
 * dropped per test file.
 */
import crypto from "node:crypto";
import path from "node:path";
import pg from "pg";

// The suite runs against the machine's services; these variables move it elsewhere.
export const TEST_POSTGRES_URL = process.env.TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test";
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379/0";
export const TEST_NATS_URL = process.env.TEST_NATS_URL ?? "nats://127.0.0.1:4222";

export const REPO_ROOT = path.resolve(import.meta.dirname, "../..");

/** A namespace unique to this run, so brokers of different test files never meet on NATS or Redis. */
export function uniqueNamespace(label: string): string {
	return `t-${label}-${crypto.randomBytes(4).toString("hex")}`;
}

export interface TestDatabase {
	url: string;
	name: string;
	drop(): Promise<void>;
}

/** A fresh, empty PostgreSQL database; drop() removes it even with connections still open. */
export async function createTestDatabase(label: string): Promise<TestDatabase> {
	const name = `chatmesh_${label.replace(/\W/g, "_")}_${crypto.randomBytes(4).toString("hex")}`.toLowerCase();
	const admin = new pg.Client({ connectionString: TEST_POSTGRES_URL });
	await admin.connect();
	try {
		await admin.query(`CREATE DATABASE ${name}`);
	} finally {
		await admin.end();
	}
	const url = new URL(TEST_POSTGRES_URL);
	url.pathname = `/${name}`;
	return {
		url: url.toString(),
		name,
		async drop() {
			const c = new pg.Client({ connectionString: TEST_POSTGRES_URL });
			await c.connect();
			try {
				await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
			} finally {
				await c.end();
			}
		}
	};
}

/** Every node of one test cluster signs and verifies with this (tests forge tokens with it too). */
export const TEST_JWT_SECRET = "test-secret-for-chatmesh-suite-0123456789abcdef";

/** One query on its own connection: for tests that look at what chatmesh stored. */
export async function queryDb<T extends pg.QueryResultRow = pg.QueryResultRow>(url: string, text: string, params: unknown[] = []): Promise<T[]> {
	const client = new pg.Client({ connectionString: url });
	await client.connect();
	try {
		return (await client.query<T>(text, params)).rows;
	} finally {
		await client.end();
	}
}

/** The environment of a clustered node on the test infrastructure. */
export function clusterEnv(namespace: string, databaseUrl: string): Record<string, string> {
	return {
		NAMESPACE: namespace,
		TRANSPORTER: TEST_NATS_URL,
		DATABASE_URL: databaseUrl,
		REDIS_URL: TEST_REDIS_URL,
		JWT_SECRET: TEST_JWT_SECRET
	};
}
