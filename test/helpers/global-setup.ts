/**
 * Before any test: the real PostgreSQL, Redis and NATS must answer. A clear message here beats
 * a hundred timeouts later. `.ci/run` starts whichever is down before calling the tests.
 */
import net from "node:net";
import pg from "pg";
import { TEST_NATS_URL, TEST_POSTGRES_URL, TEST_REDIS_URL } from "./infra";

function tcpAnswers(url: string): Promise<void> {
	const { hostname, port } = new URL(url);
	return new Promise((resolve, reject) => {
		const socket = net.connect({ host: hostname, port: Number(port) });
		socket.setTimeout(3000);
		socket.once("connect", () => {
			socket.destroy();
			resolve();
		});
		socket.once("timeout", () => {
			socket.destroy();
			reject(new Error("timeout"));
		});
		socket.once("error", reject);
	});
}

export default async function setup(): Promise<void> {
	const missing: string[] = [];
	const client = new pg.Client({ connectionString: TEST_POSTGRES_URL });
	try {
		await client.connect();
		await client.query("SELECT 1");
	} catch {
		missing.push(`PostgreSQL at ${TEST_POSTGRES_URL}`);
	} finally {
		await client.end().catch(() => {});
	}
	await tcpAnswers(TEST_REDIS_URL).catch(() => missing.push(`Redis at ${TEST_REDIS_URL}`));
	await tcpAnswers(TEST_NATS_URL).catch(() => missing.push(`NATS at ${TEST_NATS_URL}`));
	if (missing.length) throw new Error(`The tests need these running (see .ci/run for the commands): ${missing.join("; ")}`);
}
