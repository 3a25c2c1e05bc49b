import { describe, expect, it } from "vitest";
import { withProcesses } from "../helpers/fixtures";
import { clusterEnv, TEST_NATS_URL, uniqueNamespace } from "../helpers/infra";
import { spawnNode, spawnProcess } from "../helpers/processes";

// `npm run repl` attached to a running cluster shows the other node's services and actions,
// driven through piped standard input as an operator would type.
const namespace = uniqueNamespace("repl");
const cluster = withProcesses({ label: "repl", database: true });
const { procs } = cluster;

/** `npm run repl` attached to this file's cluster, once it shows its prompt. */
async function startRepl() {
	const repl = spawnProcess({ command: ["npm", "run", "--silent", "repl"], env: { NAMESPACE: namespace, TRANSPORTER: TEST_NATS_URL }, group: true });
	procs.push(repl);
	await repl.waitForOutput(/mol \$/);
	return repl;
}

describe("npm run repl", () => {
	it("lists another node's services and actions and calls one", async () => {
		const llm = spawnNode({ NAMESPACE: namespace, TRANSPORTER: TEST_NATS_URL, SERVICES: "llm", NODE_ID: "llm-for-repl" });
		procs.push(llm);
		await llm.waitForOutput(/ServiceBroker with \d+ service\(s\) started/);

		const repl = await startRepl();

		repl.proc.stdin?.write("nodes\n");
		await repl.waitForOutput(/llm-for-repl/);
		repl.proc.stdin?.write("services\n");
		await repl.waitForOutput(/║ llm\s+│\s+-\s+│\s+OK/);
		repl.proc.stdin?.write("actions\n");
		await repl.waitForOutput(/llm\.health/);
		repl.proc.stdin?.write("call llm.models\n");
		await repl.waitForOutput(/sim-small/);
		repl.proc.stdin?.write("quit\n");
		await repl.exited;
		expect(repl.output()).toMatch(/llm-for-repl/);
	}, 60_000);

	it("reaches the jobs admin actions as an operator who names an admin caller in the call's meta, and is refused without one", async () => {
		const jobs = cluster.spawn({ ...clusterEnv(namespace, cluster.db.url), SERVICES: "jobs", NODE_ID: "jobs-for-repl" });
		await jobs.waitForOutput(/ServiceBroker with \d+ service\(s\) started/);

		const repl = await startRepl();
		repl.proc.stdin?.write("nodes\n");
		await repl.waitForOutput(/jobs-for-repl/);
		repl.proc.stdin?.write("call jobs.adminList\n");
		await repl.waitForOutput(/UnauthorizedError/);
		repl.proc.stdin?.write(`call jobs.adminList '{"state":"dead"}' '{"user":{"id":"operator","roles":["admin"]}}'\n`);
		// The answer (coloured by the REPL) is the admin list: no dead jobs yet, and the queue depth.
		await repl.waitForOutput(/operator[\s\S]*Response:[\s\S]*items[\s\S]*nextCursor[\s\S]*depth/);
		repl.proc.stdin?.write("call jobs.depth\n");
		await repl.waitForOutput(/call 'jobs\.depth'[\s\S]*Response:/i);
		repl.proc.stdin?.write("quit\n");
		await repl.exited;
	}, 60_000);

	it("refuses to start without a transporter, saying why", async () => {
		const repl = spawnProcess({ command: ["npm", "run", "--silent", "repl"], env: {}, group: true });
		procs.push(repl);
		expect(await repl.exited).not.toBe(0);
		expect(repl.output()).toMatch(/TRANSPORTER is not set/);
	}, 30_000);
});
