/**
 * Exactly-once application of one answer's numbered events, without DOM or socket: every event of
 * a generation carries `seq` (from 1). An event is applied only if it is the next number; one
 * already applied (a replay overlapping live events, a repeat) is dropped; one past the next
 * number means events were missed, so the caller resubscribes after `lastSeq`. A terminal event
 * (`generation:done` / `generation:error`) ends the stream; nothing applies after it.
 */

/** A streamed answer as the page knows it. */
export function newStream({ conversationId, generationId, messageId = null, lastSeq = 0, text = "", tools = [] }) {
	return { conversationId, generationId, messageId, lastSeq, text, tools, status: "streaming", error: null };
}

/** What `applyEvent` did with an event. */
export const APPLIED = "applied";
export const DUPLICATE = "duplicate";
export const GAP = "gap";
export const ENDED = "ended";

/** Sets a stream's final state; blocked output is not kept (the policy notice stands in its place). */
export function endStream(stream, status, error = null) {
	stream.status = status || "completed";
	stream.error = error;
	if (stream.status === "blocked") stream.text = "";
}

/** How each numbered event changes its stream. */
const EFFECTS = {
	"generation:chunk": (s, e) => {
		s.text += e.delta ?? "";
	},
	"tool:start": (s, e) => {
		for (const call of e.calls ?? []) s.tools.push({ id: call.id, name: call.name, arguments: call.arguments, status: "running" });
	},
	"tool:result": (s, e) => {
		for (const r of e.results ?? []) {
			const id = r.id ?? r.toolCallId;
			let tool = s.tools.find(t => t.id === id);
			if (!tool) {
				tool = { id, name: r.name };
				s.tools.push(tool);
			}
			Object.assign(tool, { status: r.status, output: r.output, durationMs: r.durationMs });
		}
	},
	"generation:done": (s, e) => endStream(s, e.status, null),
	"generation:error": (s, e) => endStream(s, e.status || "failed", { code: e.code, message: e.message })
};

/** The socket events that carry a generation's numbered events. */
export const NUMBERED_EVENTS = Object.keys(EFFECTS);

/** Applies event `name` to `stream` once and in order; returns APPLIED, DUPLICATE, GAP (resubscribe after `stream.lastSeq`) or ENDED. */
export function applyEvent(stream, name, event) {
	if (stream.status !== "streaming") return ENDED;
	if (typeof event.seq !== "number" || event.seq <= stream.lastSeq) return DUPLICATE;
	if (event.seq !== stream.lastSeq + 1) return GAP;
	const effect = EFFECTS[name];
	if (!effect) return DUPLICATE;
	stream.lastSeq = event.seq;
	effect(stream, event);
	return APPLIED;
}
