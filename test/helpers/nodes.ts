/**
 * In-process chatmesh nodes for tests: the same startNode() the server runs, from an explicit
 * environment (never the test runner's own), on the test file's namespace.
 */
import { loadConfig } from "../../lib/config";
import { startNode, type ChatmeshNode } from "../../node";

/** LLM_PROVIDERS naming one simulator the test started, serving these models. */
export function simulatorProviders(sim: { baseURL: string }, models: string[] = ["sim-small", "sim-medium", "sim-large"]): string {
	return JSON.stringify([{ name: "sim", baseURL: sim.baseURL, models }]);
}

export async function startTestNode(env: Record<string, string>): Promise<ChatmeshNode & { baseUrl: string }> {
	const config = loadConfig({ NODE_ENV: "test", LOG_LEVEL: "warn", PORT: "0", HOST: "127.0.0.1", ...env });
	const node = await startNode(config);
	return { ...node, baseUrl: `http://127.0.0.1:${node.httpPort ?? 0}` };
}
