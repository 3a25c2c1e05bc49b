import { describe, expect, it } from "vitest";
import { withProcesses } from "../helpers/fixtures";
import { TEST_NATS_URL, uniqueNamespace } from "../helpers/infra";
import { spawnNode, spawnProcess } from "../helpers/processes";

// `npm run repl` attached to a running cluster shows the other node's services and actions,
// driven through piped standard input as an operator would type.
const namespace = uniqueNamespace("repl");
const { procs } = withProcesses({ label: "repl" });

describe("npm run repl", () => {
	it("lists another node's services and actions and calls one", async () => {
		const llm = spawnNode({ NAMESPACE: namespace, TRANSPORTER: TEST_NATS_URL, SERVICES: "llm", NODE_ID: "llm-for-repl" });
		procs.push(llm);
		await llm.waitForOutput(/ServiceBroker with \d+ service\(s\) started/);

		const repl = spawnProcess({
			command: ["npm", "run", "--silent", "repl"],
			env: { NAMESPACE: namespace, TRANSPORTER: TEST_NATS_URL },
			group: true
		});
		procs.push(repl);
		await repl.waitForOutput(/mol \$/);

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

	it("refuses to start without a transporter, saying why", async () => {
		const repl = spawnProcess({ command: ["npm", "run", "--silent", "repl"], env: {}, group: true });
		procs.push(repl);
		expect(await repl.exited).not.toBe(0);
		expect(repl.output()).toMatch(/TRANSPORTER is not set/);
	}, 30_000);
});
