/**
 * DOM building. Text from users and models only ever enters the page as text nodes (through
 * `h()` children, textContent, or the Markdown renderer, which works the same way); no string
 * is parsed as HTML anywhere in the app.
 */
import { isFinished, percent, statusText } from "./jobs.js";
import { renderMarkdown } from "./markdown.js";

/** An element: `h("button", { class: "x", type: "button", onclick: fn, hidden: true }, "text", child)`. */
export function h(tag, attrs = {}, ...children) {
	const node = document.createElement(tag);
	for (const [key, value] of Object.entries(attrs)) {
		if (value === undefined || value === null || value === false) continue;
		if (key === "class") node.className = value;
		else if (key === "dataset") Object.assign(node.dataset, value);
		else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
		else if (value === true) node.setAttribute(key, "");
		else node.setAttribute(key, String(value));
	}
	for (const child of children.flat()) {
		if (child === null || child === undefined || child === false) continue;
		node.append(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
	}
	return node;
}

const fmt = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });

function when(iso) {
	const date = new Date(iso);
	return Number.isNaN(date.getTime()) ? "" : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** A sentence for the user from an error chatmesh (or the network) reported. */
export function describeError(err) {
	const code = err?.code;
	switch (code) {
		case "RATE_LIMITED": {
			const s = Number(err.retryAfter ?? err.data?.retryAfter);
			return s > 0 ? `You're sending requests too fast. Try again in ${Math.ceil(s)} s.` : "You're sending requests too fast. Try again in a moment.";
		}
		case "QUOTA_EXCEEDED": {
			const resetAt = err.data?.resetAt;
			return `You've used your token quota for this period.${resetAt ? ` It resets ${when(resetAt)}.` : ""}`;
		}
		case "CONTENT_BLOCKED":
			return "This was blocked by the content policy. Try rephrasing it.";
		case "OFFLINE":
			return err.message || "You're offline. Reconnecting…";
		case "INVALID_CREDENTIALS":
			return "Wrong email or password.";
		case "EMAIL_TAKEN":
			return "An account with this email already exists. Sign in instead.";
		case "TOKEN_EXPIRED":
		case "TOKEN_REVOKED":
		case "INVALID_TOKEN":
		case "UNAUTHORIZED":
			return "Your session has ended. Please sign in again.";
		case "NOT_FOUND":
			return "That conversation doesn't exist any more.";
		case "MODEL_NOT_FOUND":
			return "That model isn't available any more. Pick another one.";
		case "UPSTREAM_TIMEOUT":
			return "The model took too long to answer. Try again.";
		case "UPSTREAM_ERROR":
		case "UPSTREAM_RATE_LIMITED":
		case "SERVICE_UNAVAILABLE":
			return "The model is unavailable right now. Try again in a moment.";
		case "WEAK_PASSWORD":
		case "VALIDATION_ERROR":
		case "BAD_REQUEST":
		case "PAYLOAD_TOO_LARGE":
			return err.message;
		default:
			return err?.message && code !== "INTERNAL_ERROR" ? err.message : "Something went wrong. Please try again.";
	}
}

const STATUS_LABELS = {
	cancelled: "Stopped",
	failed: "Failed",
	interrupted: "Interrupted",
	blocked: "Blocked"
};

/** One tool call and, once known, its result. */
function toolView(tool) {
	const state = tool.status ?? "running";
	const summary =
		state === "running"
			? "running…"
			: state === "error"
				? "failed"
				: state === "timeout"
					? "timed out"
					: tool.durationMs !== undefined
						? `done in ${tool.durationMs} ms`
						: "done";
	return h(
		"details",
		{ class: "tool", dataset: { state } },
		h("summary", {}, h("span", { class: "tool__name" }, tool.name || "tool"), " ", h("span", { class: "tool__state" }, summary)),
		tool.arguments ? h("div", { class: "tool__part" }, h("div", { class: "tool__label" }, "Arguments"), h("pre", {}, pretty(tool.arguments))) : null,
		tool.output !== undefined ? h("div", { class: "tool__part" }, h("div", { class: "tool__label" }, "Result"), h("pre", {}, pretty(tool.output))) : null
	);
}

function pretty(text) {
	if (typeof text !== "string") return JSON.stringify(text, null, 2);
	try {
		return JSON.stringify(JSON.parse(text), null, 2);
	} catch {
		return text;
	}
}

/**
 * A message as the list shows it. `msg`: `{ id, role, content, status, error, tools, generationId,
 * pending }`; `opts.canRetry` adds the retry button.
 */
export function messageView(msg, opts = {}) {
	const li = h("li", {
		class: `msg msg--${msg.role}`,
		dataset: { status: msg.status ?? "completed", ...(msg.generationId ? { generation: msg.generationId } : {}) }
	});
	fillMessage(li, msg, opts);
	return li;
}

export function fillMessage(li, msg, { canRetry = false, onRetry } = {}) {
	const streaming = msg.status === "streaming";
	li.dataset.status = msg.status ?? "completed";
	li.setAttribute("aria-busy", streaming ? "true" : "false");
	const who = msg.role === "user" ? "You" : msg.role === "tool" ? "Tool" : "Assistant";
	const parts = [h("div", { class: "msg__who" }, who)];

	if (msg.role === "tool") {
		parts.push(toolView({ name: msg.name ?? "tool result", status: "success", output: msg.content }));
	} else if (msg.role === "user") {
		parts.push(h("div", { class: "msg__body msg__body--plain" }, msg.content));
	} else {
		if (msg.tools?.length) parts.push(h("div", { class: "tools" }, msg.tools.map(toolView)));
		const body = h("div", { class: "msg__body markdown" });
		if (msg.content) body.append(renderMarkdown(msg.content));
		else if (streaming) body.append(h("span", { class: "typing", role: "img", "aria-label": "Thinking" }, h("i"), h("i"), h("i")));
		parts.push(body);
	}

	const footer = [];
	if (msg.pending) footer.push(h("span", { class: "msg__status" }, "Sending…"));
	if (STATUS_LABELS[msg.status]) footer.push(h("span", { class: "msg__status", dataset: { status: msg.status } }, STATUS_LABELS[msg.status]));
	if (msg.error) footer.push(h("span", { class: "msg__error", role: "alert" }, describeError(msg.error)));
	if (msg.role === "assistant" && !streaming && msg.content && navigator.clipboard?.writeText)
		footer.push(
			h(
				"button",
				{
					class: "link-button",
					type: "button",
					"aria-label": "Copy answer",
					onclick: e =>
						navigator.clipboard.writeText(msg.content).then(
							() => (e.target.textContent = "Copied"),
							() => {}
						)
				},
				"Copy"
			)
		);
	if (canRetry) footer.push(h("button", { class: "link-button", type: "button", onclick: onRetry, "aria-label": "Retry the last message" }, "Retry"));
	if (footer.length) parts.push(h("div", { class: "msg__footer" }, footer));
	li.replaceChildren(...parts);
}

/** The conversation list. `handlers`: `{ onRename(id, title), onDelete(id) }`. */
export function conversationItem(conv, { current, editing, onEdit, onRename, onCancelEdit, onDelete }) {
	const title = conv.title || "New chat";
	if (editing) {
		const input = h("input", { class: "conv__input", type: "text", value: title, maxlength: 200, "aria-label": "Conversation title" });
		let done = false;
		const finish = save => {
			if (done) return;
			done = true;
			const value = input.value.trim();
			if (save && value && value !== title) onRename(conv.id, value);
			else onCancelEdit();
		};
		input.addEventListener("keydown", e => {
			if (e.key === "Enter") {
				e.preventDefault();
				finish(true);
			} else if (e.key === "Escape") {
				e.preventDefault();
				finish(false);
			}
		});
		input.addEventListener("blur", () => finish(true));
		queueMicrotask(() => {
			input.focus();
			input.select();
		});
		return h("li", { class: "conv conv--editing", dataset: { id: conv.id } }, input);
	}
	return h(
		"li",
		{ class: `conv${current ? " conv--current" : ""}`, dataset: { id: conv.id } },
		h("a", { class: "conv__open", href: `#/c/${conv.id}`, "aria-current": current ? "page" : null, title }, title),
		h(
			"span",
			{ class: "conv__actions" },
			h("button", { class: "icon-button", type: "button", "aria-label": `Rename “${title}”`, title: "Rename", onclick: () => onEdit(conv.id) }, "✎"),
			h("button", { class: "icon-button", type: "button", "aria-label": `Delete “${title}”`, title: "Delete", onclick: () => onDelete(conv.id) }, "✕")
		)
	);
}

/**
 * One job in the jobs panel: what it is, a progress bar, where it stands, and what can be done
 * with it. `handlers`: `{ onDownload(job), onCancel(job), onDismiss(job) }`.
 */
export function jobItem(job, { onDownload, onCancel, onDismiss }) {
	const finished = isFinished(job);
	const actions = [];
	if (job.state === "succeeded")
		actions.push(
			h("button", { class: "secondary job__download", type: "button", onclick: () => onDownload(job), "aria-label": `Download ${job.label}` }, "Download")
		);
	if (!finished)
		actions.push(h("button", { class: "link-button", type: "button", onclick: () => onCancel(job), "aria-label": `Cancel ${job.label}` }, "Cancel"));
	else
		actions.push(
			h("button", { class: "icon-button", type: "button", onclick: () => onDismiss(job), "aria-label": `Dismiss ${job.label}`, title: "Dismiss" }, "✕")
		);
	return h(
		"li",
		{ class: "job", dataset: { id: job.id, state: job.state } },
		h(
			"div",
			{ class: "job__main" },
			h("span", { class: "job__label" }, job.label),
			h("progress", { class: "job__bar", max: 100, value: percent(job), "aria-label": `${job.label} progress` }),
			h("span", { class: "job__status", role: finished && job.state !== "succeeded" ? "alert" : null }, statusText(job))
		),
		h("span", { class: "job__actions" }, actions)
	);
}

/** The quota widget, or hidden when the server has no usage to show. */
export function renderUsage(node, usage) {
	const used = Number(usage?.tokensUsed);
	const limit = Number(usage?.tokensLimit);
	if (!Number.isFinite(used) || !Number.isFinite(limit) || limit <= 0) {
		node.hidden = true;
		return;
	}
	const reset = usage.resetAt ? `, resets ${when(usage.resetAt)}` : "";
	node.replaceChildren(
		h("meter", { min: 0, max: limit, value: Math.min(used, limit), low: limit * 0.7, high: limit * 0.9, optimum: 0, "aria-hidden": "true" }),
		h("span", {}, `${fmt.format(used)} / ${fmt.format(limit)}`)
	);
	node.title = `${used.toLocaleString()} of ${limit.toLocaleString()} tokens used${reset}`;
	node.setAttribute("aria-label", `Token use: ${used.toLocaleString()} of ${limit.toLocaleString()}${reset}`);
	node.hidden = false;
}
