/**
 * Fault scenarios: under load, a node dies or a dependency goes away for a few seconds, and
 * every assistant message must still reach a final state, its final event must reach every
 * client, and its quota reservation must be settled or released. Each scenario prints its
 * figures as a table; those listed in pending.ts are not registered until their fix lands.
 */
import { afterAll, describe, expect, it } from "vitest";
import { sleep } from "../helpers/chat";
import { apiClient, signUp } from "../helpers/http";
import { waitUntil } from "../helpers/processes";
import { figures, printFigures, settle, type Figures } from "./checker";
import { startCluster, type FaultCluster } from "./cluster";
import { measureRecovery, runTurn, startLoad, type TurnRecord } from "./load";
import { PENDING_SCENARIOS } from "./pending";

/** ~3 s answers: slow enough that every fault lands mid-stream. */
const KNOBS = { outputTokens: 30, tokenIntervalMs: 100, ttftMs: 200 };
const CLIENTS = 6;
const LOAD_MS = 8_000;
/** A client that hears nothing for this long has lost its answer's final event. */
const CLIENT_IDLE_TIMEOUT_MS = 15_000;
const SETTLE_MS = 30_000;
const RECOVERY_LIMIT_S = 5;
const OUTAGE_MS = 3_000;

const clusters = new Set<FaultCluster>();
afterAll(async () => {
	await Promise.all([...clusters].map(c => c.stop()));
});

interface Expectations {
	/** Node faults: a live node of the role exists, so no turn may be refused. */
	noRefusals: boolean;
}

/**
 * Runs one scenario: a cluster, a warm-up turn per gateway, the load, the fault once answers are
 * mid-stream (it returns the moment the cluster should work again), then the figures.
 */
async function scenario(name: string, fault: (cluster: FaultCluster) => Promise<number>, expectations: Expectations): Promise<Figures> {
	const t0 = Date.now();
	const cluster = await startCluster(name, KNOBS);
	const t1 = Date.now();
	clusters.add(cluster);
	try {
		// The cluster answers a turn on every gateway before the load starts (nodes find each other first).
		const session = await signUp(apiClient(cluster.gatewayUrls()[0]), "warmup");
		const warm: TurnRecord[] = [];
		await waitUntil(async () => {
			const turns = await Promise.all([0, 1].map(i => runTurn(() => cluster.gatewayUrls(), 2000, i, session, CLIENT_IDLE_TIMEOUT_MS, warm)));
			return turns.every(t => t.terminal?.status === "completed");
		}, 45_000).catch(err => {
			throw new Error(`the cluster does not answer before the fault (${err}): ${JSON.stringify(warm.slice(-2))}`);
		});

		const t2 = Date.now();
		const load = await startLoad(() => cluster.gatewayUrls(), { clients: CLIENTS, untilMs: LOAD_MS, idleTimeoutMs: CLIENT_IDLE_TIMEOUT_MS, pauseMs: 200 });
		await waitUntil(async () => load.turns.some(t => t.firstChunkAt !== undefined && !t.terminal), 15_000).catch(err => {
			throw new Error(`no answer is mid-stream under load (${err}): ${JSON.stringify(load.turns.slice(0, 3))}`);
		});
		const back = await fault(cluster);
		const recovery = await measureRecovery(() => cluster.gatewayUrls(), back, 20_000, load.turns);
		await load.done;
		const t3 = Date.now();
		const db = await settle(cluster.postgres.url, SETTLE_MS);
		const s = (a: number, b: number) => ((b - a) / 1000).toFixed(1);
		const phases = `start ${s(t0, t1)} warm ${s(t1, t2)} load ${s(t2, t3)} settle ${s(t3, Date.now())}`;
		const f = figures(name, load.turns, db, { faultAt: back, recoveryS: recovery, crashed: cluster.crashed(), phases });
		printFigures(f);

		expect.soft(f.stuckStreaming, "answers left streaming").toBe(0);
		expect.soft(f.reservationsHeld, "quota reservations held").toBe(0);
		expect.soft(f.tokensReserved, "tokens still reserved").toBe(0);
		expect.soft(f.missingTerminal, "answers whose client heard no final event").toBe(0);
		expect.soft(f.gaps, "gaps in a client's seqs").toBe(0);
		expect.soft(f.duplicates, "duplicate seqs at a client").toBe(0);
		expect.soft(f.crashed, "processes that crashed").toBe("none");
		if (expectations.noRefusals) {
			expect.soft(f.turnsRefused, "turns refused while a live node existed").toBe(0);
			expect.soft(f.failedAfterFault, "turns started after the kill that failed although a live node existed").toBe(0);
		}
		expect.soft(typeof f.recoveryS === "number" && f.recoveryS <= RECOVERY_LIMIT_S, `recovered within ${RECOVERY_LIMIT_S} s (took ${f.recoveryS})`).toBe(true);
		return f;
	} finally {
		clusters.delete(cluster);
		await cluster.stop();
	}
}

/** Waits a little so the fault lands with answers well into their stream. */
const midAnswer = () => sleep(1000);

const SCENARIOS: Array<{ name: string; title: string; run: () => Promise<Figures> }> = [
	{
		name: "llm-node-killed",
		title: "kill -9 an llm node mid-answer while a second llm node lives",
		run: () =>
			scenario(
				"llm-node-killed",
				async c => {
					await midAnswer();
					c.killNode("llm-1");
					return Date.now();
				},
				{ noRefusals: true }
			)
	},
	{
		name: "conversation-node-killed",
		title: "kill -9 a conversation node mid-answer while a second conversation node lives",
		run: () =>
			scenario(
				"conversation-node-killed",
				async c => {
					await midAnswer();
					c.killNode("conv-1");
					return Date.now();
				},
				{ noRefusals: true }
			)
	},
	{
		name: "gateway-killed",
		title: "kill -9 a gateway mid-answer: its clients resume on the other gateway with no gap and no duplicate",
		run: () =>
			scenario(
				"gateway-killed",
				async c => {
					await midAnswer();
					c.killNode("gw-1");
					return Date.now();
				},
				{ noRefusals: false }
			)
	},
	...(["redis", "nats", "postgres"] as const).map(dep => ({
		name: `${dep}-outage`,
		title: `${dep} stopped for ${OUTAGE_MS / 1000} s under load, then restarted`,
		run: () =>
			scenario(
				`${dep}-outage`,
				async c => {
					await midAnswer();
					await c[dep].stop();
					await sleep(OUTAGE_MS); // the outage itself: its length is the scenario
					await c[dep].start();
					return Date.now();
				},
				{ noRefusals: false }
			)
	}))
];

const runPending = process.env.FAULTS_RUN_PENDING === "1";

describe("fault scenarios: every answer ends, is heard, and settles its quota", () => {
	for (const s of SCENARIOS) {
		if (PENDING_SCENARIOS.has(s.name) && !runPending) continue;
		it(`${s.name}: ${s.title}`, async () => {
			await s.run();
		}, 180_000);
	}
});
