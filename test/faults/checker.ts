/**
 * The invariant's figures after a fault scenario: what the database still holds open (answers
 * `streaming`, quota reservations), what the clients saw (final events, gaps, duplicates, 5xx,
 * refusals) and how long turns took to work again; printed as one table per scenario.
 */
import { queryDb } from "../helpers/infra";
import type { TurnRecord } from "./load";

export interface Figures {
	scenario: string;
	turnsSent: number;
	turnsAccepted: number;
	turnsRefused: number;
	/** Refusals answered with an HTTP status (the rest lost their connection). */
	refusedByServer: number;
	refusedCodes: string;
	fiveXx: number;
	missingTerminal: number;
	terminalStatuses: string;
	gaps: number;
	duplicates: number;
	resumes: number;
	stuckStreaming: number;
	reservationsHeld: number;
	tokensReserved: number;
	/** Turns started after the fault (a node killed) or after the dependency returned that were refused or ended failed. */
	failedAfterFault: number;
	recoveryS: number | "none";
	crashed: string;
	/** Seconds each phase took: cluster start, warm-up, load and fault, settle. */
	phases: string;
}

interface DbState {
	stuckStreaming: number;
	reservationsHeld: number;
	tokensReserved: number;
}

/** What is open among the rows of one scenario (created since `since`); reserved tokens less the scenario's starting `baseline`. */
export async function dbState(databaseUrl: string, since: Date, baseline = 0): Promise<DbState> {
	const [streaming] = await queryDb<{ n: string }>(
		databaseUrl,
		"SELECT count(*) AS n FROM messages WHERE role = 'assistant' AND status = 'streaming' AND created_at >= $1",
		[since]
	);
	const [held] = await queryDb<{ n: string }>(databaseUrl, "SELECT count(*) AS n FROM quota_reservations WHERE created_at >= $1", [since]);
	const [reserved] = await queryDb<{ n: string | null }>(databaseUrl, "SELECT sum(tokens_reserved) AS n FROM user_quotas");
	return { stuckStreaming: Number(streaming.n), reservationsHeld: Number(held.n), tokensReserved: Number(reserved.n ?? 0) - baseline };
}

/** Waits up to `settleMs` for nothing of the scenario to be left open, then reads the database one last time. */
export async function settle(databaseUrl: string, since: Date, baseline: number, settleMs: number): Promise<DbState> {
	const deadline = Date.now() + settleMs;
	for (;;) {
		// The database may still be coming back from its own outage: an unanswered read is retried.
		const state = await dbState(databaseUrl, since, baseline).catch(() => undefined);
		if (state && state.stuckStreaming === 0 && state.reservationsHeld === 0 && state.tokensReserved <= 0) return state;
		if (Date.now() > deadline) return state ?? dbState(databaseUrl, since, baseline);
		await new Promise(r => setTimeout(r, 500));
	}
}

/** Gaps and duplicates in the seqs one client saw for one answer (it must see 1, 2, 3, … once each). */
function seqFaults(seqs: number[]): { gaps: number; duplicates: number } {
	let gaps = 0;
	let duplicates = 0;
	let last = 0;
	for (const seq of seqs) {
		if (seq <= last) duplicates += 1;
		else {
			if (seq > last + 1) gaps += 1;
			last = seq;
		}
	}
	return { gaps, duplicates };
}

function tally(values: string[]): string {
	const counts = new Map<string, number>();
	for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
	return [...counts].map(([k, n]) => `${k}:${n}`).join(" ") || "-";
}

export function figures(
	scenario: string,
	turns: TurnRecord[],
	db: DbState,
	run: { faultAt: number; recoveryS: number | undefined; crashed: string[]; phases: string }
): Figures {
	const { recoveryS, crashed } = run;
	const accepted = turns.filter(t => t.generationId);
	const refused = turns.filter(t => t.refused);
	const seq = accepted.map(t => seqFaults(t.seqs));
	return {
		scenario,
		turnsSent: turns.length,
		turnsAccepted: accepted.length,
		turnsRefused: refused.length,
		refusedByServer: refused.filter(t => (t.refused?.status ?? 0) > 0).length,
		refusedCodes: tally(refused.map(t => `${t.refused?.status}/${t.refused?.code || "-"}`)),
		fiveXx: refused.filter(t => (t.refused?.status ?? 0) >= 500).length + turns.reduce((n, t) => n + t.stream5xx, 0),
		missingTerminal: accepted.filter(t => !t.terminal).length,
		terminalStatuses: tally(accepted.filter(t => t.terminal).map(t => `${t.terminal?.status}${t.terminal?.code ? `/${t.terminal.code}` : ""}`)),
		gaps: seq.reduce((n, s) => n + s.gaps, 0),
		duplicates: seq.reduce((n, s) => n + s.duplicates, 0),
		resumes: accepted.reduce((n, t) => n + t.resumes, 0),
		...db,
		failedAfterFault: turns.filter(t => t.startedAt >= run.faultAt && (t.refused || t.terminal?.status === "failed")).length,
		recoveryS: recoveryS === undefined ? "none" : Math.round(recoveryS * 10) / 10,
		crashed: crashed.join(", ") || "none",
		phases: run.phases
	};
}

/** Prints the figures as a two-column table, so a run's log reads as a report. */
export function printFigures(f: Figures): void {
	const rows = Object.entries(f).map(([k, v]) => [k, String(v)] as const);
	const width = Math.max(...rows.map(([k]) => k.length));
	const line = `+${"-".repeat(width + 2)}+${"-".repeat(42)}+`;
	const body = rows.map(([k, v]) => `| ${k.padEnd(width)} | ${v.padEnd(40)} |`).join("\n");
	process.stdout.write(`\n${line}\n${body}\n${line}\n`);
}
