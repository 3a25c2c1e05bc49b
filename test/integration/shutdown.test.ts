import { beforeAll, describe, expect, it } from "vitest";
import type { SimulatorHandle } from "../../simulator/simulator";
import { waitFor } from "../helpers/wait";
import { withProcesses } from "../helpers/fixtures";
import { readSse } from "../helpers/chat";
import { apiClient, signUp } from "../helpers/http";
import { spawnNode, waitUntil, type NodeProcess } from "../helpers/processes";
import { simulatorProviders } from "../helpers/nodes";

// SIGTERM with an answer still streaming: the node stops taking work, lets the answer finish
// within the grace period, stores it, closes its connections and exits 0.
const cluster = withProcesses({ label: "shutdown", simulator: {}, dataDir: true });
const { procs } = cluster;
let sim: SimulatorHandle;
beforeAll(() => {
	sim = cluster.sim;
});

function start(): NodeProcess {
	const proc = spawnNode({
		DATA_DIR: cluster.dataDir,
		NODE_ENV: "development",
		LLM_PROVIDERS: simulatorProviders(cluster.sim, ["sim-small"]),
		SHUTDOWN_GRACE_MS: "8000"
	});
	procs.push(proc);
	return proc;
}

describe("graceful shutdown", () => {
	it("finishes and stores an answer in flight at SIGTERM, then exits 0", async () => {
		sim.configure({ outputTokens: 40, tokenIntervalMs: 50 });
		const first = start();
		const base = `http://127.0.0.1:${await first.httpPort()}`;
		const api = apiClient(base);
		const user = await signUp(api, "shutdown");
		const conv = await api.post<{ id: string }>("/api/conversations", { token: user.accessToken, body: {} });
		const sent = await api.post<{ generationId: string }>(`/api/conversations/${conv.body.id}/messages`, {
			token: user.accessToken,
			body: { content: "finish this before you go" }
		});
		expect(sent.status).toBe(202);
		// A client watching over SSE: released at once when the node stops, free to resume elsewhere.
		const watching = await fetch(`${base}/api/generations/${sent.body.generationId}/events`, {
			headers: { authorization: `Bearer ${user.accessToken}` }
		});
		let released = 0;
		const watched = readSse(watching).then(frames => {
			released = Date.now();
			return frames;
		});
		// The answer is under way (about 2 s in all): the model has produced tokens.
		await waitFor(() => sim.requests().some(r => r.stream && (r.completionTokens ?? 0) > 0), { what: "tokens of the answer" });
		const stoppedAt = Date.now();
		first.kill("SIGTERM");
		const frames = await watched;
		expect(frames.length).toBeGreaterThan(0);
		expect(frames.at(-1)?.data).not.toBe("[DONE]");
		expect(released - stoppedAt).toBeLessThan(1000);
		expect(await first.exited).toBe(0);
		// It waited for the answer rather than cutting it off.
		expect(Date.now() - stoppedAt).toBeGreaterThan(1000);
		expect(first.output()).toMatch(/SIGTERM received: shutting down/);

		const second = start();
		const api2 = apiClient(`http://127.0.0.1:${await second.httpPort()}`);
		const login = await api2.post<{ accessToken: string }>("/api/auth/login", { body: { email: user.email, password: user.password } });
		let status: { status: string; usage: { completionTokens: number } | null } | undefined;
		await waitUntil(async () => {
			status = (await api2.get<typeof status>(`/api/generations/${sent.body.generationId}`, { token: login.body.accessToken })).body;
			return status?.status !== undefined;
		}, 10_000);
		expect(status?.status).toBe("completed");
		expect(status?.usage?.completionTokens).toBe(40);
		second.kill("SIGTERM");
		expect(await second.exited).toBe(0);
	}, 60_000);
});
