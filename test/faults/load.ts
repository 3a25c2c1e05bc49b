/**
 * The load of a fault scenario: clients that each send one turn at a time over HTTP (new
 * conversation, then the message) and follow its answer as SSE, resuming after the last seq on
 * the next gateway whenever a stream breaks, and a probe that measures when turns work again.
 */
import { eachSseData, sleep } from "../helpers/chat";
import { apiClient, signUp, type Session } from "../helpers/http";

export interface TurnRecord {
	client: number;
	startedAt: number;
	/** Set when the turn was refused: the HTTP status (0: no answer) and the error code. */
	refused?: { status: number; code: string; step: "conversation" | "message"; body?: string };
	generationId?: string;
	/** Sequence numbers in the order they arrived (chunks, tools, and the final event). */
	seqs: number[];
	terminal?: { name: string; status: string; code?: string; at: number };
	/** Times the answer's stream broke (connection lost, STREAM_UNAVAILABLE) and was resumed. */
	resumes: number;
	/** 5xx answers to the event stream's GET while resuming. */
	stream5xx: number;
	firstChunkAt?: number;
}

export interface LoadOptions {
	clients: number;
	/** Clients start sending now and send no new turn after this time. */
	untilMs: number;
	/** A turn whose stream stays silent this long counts as having no final event. */
	idleTimeoutMs: number;
	/** The gap between one client's turns. */
	pauseMs: number;
}

function errorCode(body: unknown): string {
	const shaped = body as { error?: { code?: unknown }; type?: unknown } | undefined;
	const code = shaped?.type ?? shaped?.error?.code;
	return typeof code === "string" ? code : "";
}

/** Follows one generation to its final event, resuming on another gateway when a stream breaks. */
async function follow(gateways: () => string[], start: number, session: Session, turn: TurnRecord, idleTimeoutMs: number): Promise<void> {
	let lastSeq = 0;
	let lastEventAt = Date.now();
	let attempt = start;
	while (!turn.terminal && Date.now() - lastEventAt < idleTimeoutMs) {
		const urls = gateways();
		const base = urls[attempt % urls.length];
		const abort = new AbortController();
		const idle = setInterval(() => Date.now() - lastEventAt >= idleTimeoutMs && abort.abort(), 250);
		try {
			const res = await fetch(`${base}/api/generations/${turn.generationId}/events`, {
				headers: { authorization: `Bearer ${session.accessToken}`, accept: "text/event-stream", "last-event-id": String(lastSeq) },
				signal: abort.signal
			});
			if (res.status >= 500) turn.stream5xx += 1;
			if (res.status === 200) {
				await eachSseData(res, data => {
					if (data === "[DONE]") return;
					const event = JSON.parse(data) as { type: string; seq?: number; status?: string; code?: string };
					// STREAM_UNAVAILABLE carries no seq: the log broke, resume (it is no progress for the idle clock).
					if (event.seq === undefined) return;
					lastEventAt = Date.now();
					turn.seqs.push(event.seq);
					lastSeq = Math.max(lastSeq, event.seq);
					if (event.type === "generation:chunk") turn.firstChunkAt ??= Date.now();
					if (event.type === "generation:done" || event.type === "generation:error")
						turn.terminal = { name: event.type, status: event.status ?? "", code: event.code, at: Date.now() };
				});
			}
		} catch {
			// The gateway went away mid-stream, or the idle timer aborted: resume or give up below.
		} finally {
			clearInterval(idle);
		}
		if (!turn.terminal) {
			turn.resumes += 1;
			attempt += 1;
			await sleep(200);
		}
	}
}

/** One turn on one gateway: a new conversation, a message, then its answer to the end. */
export async function runTurn(
	gateways: () => string[],
	client: number,
	index: number,
	session: Session,
	idleTimeoutMs: number,
	turns: TurnRecord[]
): Promise<TurnRecord> {
	const turn: TurnRecord = { client, startedAt: Date.now(), seqs: [], resumes: 0, stream5xx: 0 };
	turns.push(turn);
	const urls = gateways();
	const api = apiClient(urls[(client + index) % urls.length]);
	const token = session.accessToken;
	const refuse = (status: number, body: unknown, step: "conversation" | "message") =>
		(turn.refused = { status, code: errorCode(body), step, body: JSON.stringify(body)?.slice(0, 200) });
	try {
		const conv = await api.post<{ id: string }>("/api/conversations", { token, body: {} });
		if (conv.status !== 201 && conv.status !== 200) return refuse(conv.status, conv.body, "conversation") && turn;
		const sent = await api.post<{ generationId: string }>(`/api/conversations/${conv.body.id}/messages`, {
			token,
			body: { content: `fault scenario turn ${client}.${index}: tell me a long story` }
		});
		if (sent.status !== 202) return refuse(sent.status, sent.body, "message") && turn;
		turn.generationId = sent.body.generationId;
	} catch {
		refuse(0, undefined, turn.generationId ? "message" : "conversation");
		return turn;
	}
	await follow(gateways, client + index, session, turn, idleTimeoutMs);
	return turn;
}

export interface Load {
	turns: TurnRecord[];
	done: Promise<void>;
}

/** Starts the clients; `done` resolves once every client's last turn has ended or timed out. */
export async function startLoad(gateways: () => string[], opts: LoadOptions): Promise<Load> {
	const turns: TurnRecord[] = [];
	const sessions = await Promise.all(Array.from({ length: opts.clients }, (_, i) => signUp(apiClient(gateways()[i % gateways().length]), `fault${i}`)));
	const until = Date.now() + opts.untilMs;
	const client = async (i: number) => {
		for (let n = 0; Date.now() < until; n++) {
			const turn = await runTurn(gateways, i, n, sessions[i], opts.idleTimeoutMs, turns);
			await sleep(turn.refused ? 250 : opts.pauseMs);
		}
	};
	return { turns, done: Promise.all(sessions.map((_, i) => client(i))).then(() => undefined) };
}

/**
 * Seconds from `since` until a turn started after it streams its first chunk: turns are started
 * every 500 ms until one does, for at most `timeoutMs`. Undefined when none did.
 */
export async function measureRecovery(gateways: () => string[], since: number, timeoutMs: number, turns: TurnRecord[]): Promise<number | undefined> {
	let session: Session | undefined;
	const deadline = since + timeoutMs;
	let recoveredAt: number | undefined;
	const probes: Promise<unknown>[] = [];
	for (let n = 0; recoveredAt === undefined && Date.now() < deadline; n++) {
		if (!session) {
			session = await signUp(apiClient(gateways()[0]), "probe").catch(() => undefined);
			if (!session) {
				await sleep(250);
				continue;
			}
		}
		const probe = runTurn(gateways, 1000, n, session, 15_000, turns);
		probes.push(probe);
		// The first chunk is what counts; the probe's answer runs on and is checked like any other.
		const started = Date.now();
		while (recoveredAt === undefined && Date.now() - started < 500) {
			const first = turns.filter(t => t.client === 1000 && t.firstChunkAt !== undefined).map(t => t.firstChunkAt as number);
			if (first.length) recoveredAt = Math.min(...first);
			else await sleep(50);
		}
	}
	await Promise.all(probes);
	return recoveredAt === undefined ? undefined : Math.max(0, (recoveredAt - since) / 1000);
}
