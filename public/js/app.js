/**
 * The chat app: signs in, lists conversations, sends messages over socket.io and renders answers
 * as they stream. Every answer is a generation whose events carry numbers (`seq` from 1); the app
 * keeps, per answer, the text up to the last number it applied (in sessionStorage too), ignores
 * numbers it already has, and after any reconnection or reload asks for what follows that number
 * (`generation:subscribe {generationId, after}`), so an answer resumes with no gap and no repeat.
 * Reports and exports of a conversation are jobs: started with `POST /api/jobs`, followed live
 * (`job:progress`, `job:done`) with polls as the fallback (jobs.js), downloaded through fetch.
 */
import { ApiError, api, currentUser, download, onSignedOut, resume, signIn, signOut, signUp } from "./api.js";
import { applyDone, applyProgress, applySnapshot, downloadName, isFinished, newJob, nextPollMs } from "./jobs.js";
import { createSocket } from "./socket.js";
import { preferences, savedJobs, savedStreams, state } from "./state.js";
import { APPLIED, applyEvent, endStream, GAP, NUMBERED_EVENTS, newStream } from "./stream.js";
import { conversationItem, describeError, fillMessage, h, jobItem, messageView, renderUsage } from "./views.js";

const $ = id => document.getElementById(id);
const els = {
	announcer: $("announcer"),
	authView: $("auth-view"),
	authForm: $("auth-form"),
	authTitle: $("auth-title"),
	authEmail: $("auth-email"),
	authPassword: $("auth-password"),
	authHint: $("auth-hint"),
	authError: $("auth-error"),
	authSubmit: $("auth-submit"),
	authSwitch: $("auth-switch"),
	authSwitchText: $("auth-switch-text"),
	appView: $("app-view"),
	sidebar: $("sidebar"),
	backdrop: $("backdrop"),
	menuToggle: $("menu-toggle"),
	newChat: $("new-chat"),
	convScroll: $("conversation-scroll"),
	convList: $("conversation-list"),
	convEmpty: $("conversation-empty"),
	convSentinel: $("conversation-sentinel"),
	accountEmail: $("account-email"),
	signOut: $("sign-out"),
	chatTitle: $("chat-title"),
	connection: $("connection"),
	usage: $("usage"),
	modelPicker: $("model-picker"),
	convMenu: $("conv-menu"),
	convMenuButton: $("conv-menu-button"),
	convMenuItems: $("conv-menu-items"),
	jobReport: $("job-report"),
	jobExportMd: $("job-export-md"),
	jobExportJson: $("job-export-json"),
	jobs: $("jobs"),
	jobList: $("job-list"),
	banner: $("banner"),
	bannerText: $("banner-text"),
	bannerClose: $("banner-close"),
	messages: $("messages"),
	historySentinel: $("history-sentinel"),
	emptyState: $("empty-state"),
	messageList: $("message-list"),
	composer: $("composer"),
	prompt: $("prompt"),
	send: $("send"),
	stop: $("stop")
};

let socket = null;
let authMode = "signin";
/** Bumped on every navigation, so a slow load for a conversation left behind is dropped. */
let navigation = 0;
let editingId = null;
let historyLoading = false;
/** Events that arrive for a generation before the `chat:send` acknowledgement names it. */
const early = new Map();
let awaitingAcks = 0;
const renderQueued = new Set();
/** The next poll of each unfinished job, by job id. */
const pollTimers = new Map();

// ---------------------------------------------------------------------------------------------
// Small helpers

function announce(text) {
	els.announcer.textContent = "";
	setTimeout(() => (els.announcer.textContent = text), 50);
}

function showBanner(text) {
	els.bannerText.textContent = text;
	els.banner.hidden = false;
}

function hideBanner() {
	els.banner.hidden = true;
}

function showError(err) {
	if (!(err instanceof ApiError)) console.error(err);
	showBanner(describeError(err));
}

function nearBottom() {
	const m = els.messages;
	return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollToBottom() {
	els.messages.scrollTop = els.messages.scrollHeight;
}

/** Focus the composer, except on touch screens, where that would pop up the keyboard unasked. */
function focusPrompt() {
	if (matchMedia("(pointer: fine)").matches) els.prompt.focus();
}

function setSidebar(open) {
	els.appView.classList.toggle("sidebar-open", open);
	els.menuToggle.setAttribute("aria-expanded", String(open));
}

// ---------------------------------------------------------------------------------------------
// Signing in and out

function setAuthMode(mode) {
	authMode = mode;
	const signup = mode === "signup";
	els.authTitle.textContent = signup ? "Create your account" : "Sign in";
	els.authSubmit.textContent = signup ? "Create account" : "Sign in";
	els.authSwitchText.textContent = signup ? "Already have an account?" : "New here?";
	els.authSwitch.textContent = signup ? "Sign in" : "Create an account";
	els.authPassword.autocomplete = signup ? "new-password" : "current-password";
	els.authHint.hidden = !signup;
	els.authError.textContent = "";
}

function showAuth(message = "") {
	els.appView.hidden = true;
	els.authView.hidden = false;
	els.authError.textContent = message;
	document.title = "Sign in · chatmesh";
	els.authEmail.focus();
}

async function submitAuth(event) {
	event.preventDefault();
	const email = els.authEmail.value.trim();
	const password = els.authPassword.value;
	if (!email || !password) {
		els.authError.textContent = "Enter your email and password.";
		return;
	}
	if (authMode === "signup" && password.length < 10) {
		els.authError.textContent = "Choose a password of at least 10 characters.";
		return;
	}
	els.authSubmit.disabled = true;
	els.authError.textContent = "";
	try {
		await (authMode === "signup" ? signUp(email, password) : signIn(email, password));
		els.authPassword.value = "";
		enterApp();
	} catch (err) {
		els.authError.textContent = describeError(err);
	} finally {
		els.authSubmit.disabled = false;
	}
}

async function doSignOut() {
	leaveApp();
	savedStreams.clear();
	savedJobs.clear();
	await signOut();
	setAuthMode("signin");
	showAuth();
}

function enterApp() {
	state.user = currentUser();
	els.accountEmail.textContent = state.user?.email ?? "";
	els.authView.hidden = true;
	els.appView.hidden = false;
	// Answers this tab was streaming before a reload resume after the number it last saw.
	for (const [conversationId, saved] of Object.entries(savedStreams.all()))
		if (saved?.generationId) state.streams.set(saved.generationId, newStream({ conversationId, ...saved }));
	socket = createSocket({
		onConnect: () => {
			resubscribeAll();
			pollJobsNow();
		},
		onStatus: showConnection
	});
	for (const [event, handle] of Object.entries({ ...socketHandlers, ...jobHandlers })) socket.on(event, handle);
	socket.connect();
	loadModels();
	loadUsage();
	loadMoreConversations();
	restoreJobs();
	route();
}

function leaveApp() {
	socket?.close();
	socket = null;
	Object.assign(state, { user: null, conversations: [], nextCursor: null, listComplete: false, currentId: null, messages: [], messagesCursor: null });
	state.streams.clear();
	early.clear();
	for (const timer of pollTimers.values()) clearTimeout(timer);
	pollTimers.clear();
	state.jobs.clear();
	renderJobs();
	els.convList.replaceChildren();
	els.messageList.replaceChildren();
	hideBanner();
}

// ---------------------------------------------------------------------------------------------
// Header widgets

function showConnection(status) {
	els.connection.hidden = status === "connected";
	els.connection.dataset.state = status;
	els.connection.textContent = status === "offline" ? "Offline" : "Reconnecting…";
	if (status === "connected" && els.bannerText.textContent.startsWith("You're offline")) hideBanner();
	// Live job events may be missed while the socket is away: poll at the offline pace meanwhile.
	if (status !== "connected") for (const job of state.jobs.values()) schedulePoll(job);
}

async function loadModels() {
	try {
		state.models = await api.models();
	} catch {
		state.models = [];
	}
	const chosen = preferences.model();
	const options = [new Option("Auto", "")];
	for (const m of state.models) options.push(new Option(m.id, m.id));
	els.modelPicker.replaceChildren(...options);
	els.modelPicker.value = state.models.some(m => m.id === chosen) ? chosen : "";
}

async function loadUsage() {
	try {
		renderUsage(els.usage, await api.usage());
	} catch {
		// No usage endpoint (or no quota) on this server: no widget.
		els.usage.hidden = true;
	}
}

// ---------------------------------------------------------------------------------------------
// Conversation list

function renderConversations() {
	els.convList.replaceChildren(
		...state.conversations.map(conv =>
			conversationItem(conv, {
				current: conv.id === state.currentId,
				editing: conv.id === editingId,
				onEdit: id => {
					editingId = id;
					renderConversations();
				},
				onCancelEdit: () => {
					editingId = null;
					renderConversations();
					focusConversation(conv.id);
				},
				onRename: renameConversation,
				onDelete: deleteConversation
			})
		)
	);
	els.convEmpty.hidden = state.conversations.length > 0 || !state.listComplete;
}

function focusConversation(id) {
	els.convList.querySelector(`li[data-id="${CSS.escape(id)}"] .conv__open`)?.focus();
}

function sentinelVisible(sentinel, container) {
	const a = sentinel.getBoundingClientRect();
	const b = container.getBoundingClientRect();
	return a.top < b.bottom + 200 && a.bottom > b.top - 200 && !container.closest("[hidden]");
}

async function loadMoreConversations() {
	if (state.listLoading || state.listComplete) return;
	state.listLoading = true;
	const at = navigation;
	try {
		const page = await api.conversations(state.nextCursor);
		if (!socket) return;
		const known = new Set(state.conversations.map(c => c.id));
		state.conversations.push(...page.items.filter(c => !known.has(c.id)));
		state.nextCursor = page.nextCursor;
		state.listComplete = !page.nextCursor;
		renderConversations();
		if (at === navigation) updateTitle();
	} catch (err) {
		showError(err);
		return;
	} finally {
		state.listLoading = false;
	}
	// The list does not fill its pane yet: keep going.
	if (!state.listComplete && sentinelVisible(els.convSentinel, els.convScroll)) loadMoreConversations();
}

/** Moves a conversation to the top (it just had activity), adding it if the list lacks it. */
function touchConversation(id) {
	const index = state.conversations.findIndex(c => c.id === id);
	const conv = index >= 0 ? state.conversations.splice(index, 1)[0] : { id, title: null };
	conv.updatedAt = new Date().toISOString();
	state.conversations.unshift(conv);
	renderConversations();
	return conv;
}

async function renameConversation(id, title) {
	editingId = null;
	const conv = state.conversations.find(c => c.id === id);
	const before = conv?.title;
	if (conv) Object.assign(conv, { title, provisional: false });
	renderConversations();
	updateTitle();
	focusConversation(id);
	try {
		const saved = await api.rename(id, title);
		if (conv) conv.title = saved.title;
	} catch (err) {
		if (conv) conv.title = before;
		showError(err);
	}
	renderConversations();
	updateTitle();
	focusConversation(id);
}

async function deleteConversation(id) {
	const conv = state.conversations.find(c => c.id === id);
	if (!confirm(`Delete “${conv?.title || "New chat"}”? This can't be undone.`)) return;
	try {
		await api.remove(id);
	} catch (err) {
		if (err.code !== "NOT_FOUND") return showError(err);
	}
	state.conversations = state.conversations.filter(c => c.id !== id);
	renderConversations();
	if (state.currentId === id) go(null);
	els.newChat.focus();
	announce("Conversation deleted");
}

/** The server's title for a conversation whose title was only guessed; it lands just after the first answer. */
async function refreshTitle(id, attempts = 4) {
	for (let i = 0; i < attempts; i++) {
		const conv = state.conversations.find(c => c.id === id);
		if (!conv?.provisional) return;
		try {
			const fresh = await api.conversation(id);
			if (fresh.title) {
				Object.assign(conv, { title: fresh.title, provisional: false });
				renderConversations();
				if (state.currentId === id) updateTitle();
				return;
			}
		} catch {
			return;
		}
		await new Promise(resolve => setTimeout(resolve, 400 * (i + 1)));
	}
}

function setMenu(open) {
	els.convMenuItems.hidden = !open;
	els.convMenuButton.setAttribute("aria-expanded", String(open));
	if (open) els.convMenuItems.querySelector("button")?.focus();
}

const menuOpen = () => !els.convMenuItems.hidden;

function updateTitle() {
	els.convMenu.hidden = !state.currentId;
	if (!state.currentId) setMenu(false);
	const conv = state.conversations.find(c => c.id === state.currentId);
	const title = state.currentId ? conv?.title || "Conversation" : "New chat";
	els.chatTitle.textContent = title;
	document.title = `${title} · chatmesh`;
}

// ---------------------------------------------------------------------------------------------
// Navigation and the open conversation

function go(id) {
	const hash = id ? `#/c/${id}` : "#/";
	if (location.hash !== hash) location.hash = hash;
	else route();
}

function route() {
	if (!socket) return;
	const match = /^#\/c\/([0-9a-fA-F-]{36})$/.exec(location.hash);
	openConversation(match ? match[1] : null);
}

async function openConversation(id) {
	const at = ++navigation;
	state.currentId = id;
	state.messages = [];
	state.messagesCursor = null;
	hideBanner();
	setSidebar(false);
	renderConversations();
	updateTitle();
	renderMessages();
	updateComposer();
	if (!id) {
		focusPrompt();
		return;
	}
	if (!state.conversations.some(c => c.id === id))
		api.conversation(id).then(
			conv => {
				if (at !== navigation || state.conversations.some(c => c.id === id)) return;
				state.conversations.unshift(conv);
				state.conversations.sort((a, b) => String(b.updatedAt).localeCompare(String(a.updatedAt)));
				renderConversations();
				updateTitle();
			},
			() => {}
		);
	try {
		const page = await api.messages(id);
		if (at !== navigation) return;
		state.messages = page.items.slice().reverse().map(fromServer);
		state.messagesCursor = page.nextCursor;
		attachStreams(state.messages);
		renderMessages();
		updateComposer();
		scrollToBottom();
		focusPrompt();
		loadOlderIfVisible();
	} catch (err) {
		if (at !== navigation) return;
		showError(err);
		if (err.code === "NOT_FOUND") {
			state.conversations = state.conversations.filter(c => c.id !== id);
			go(null);
		}
	}
}

function fromServer(m) {
	const results = Array.isArray(m.metadata?.toolResults) ? m.metadata.toolResults : [];
	const tools = (m.toolCalls ?? []).map(c => {
		const result = results.find(r => (r?.toolCallId ?? r?.id) === c.id);
		return {
			id: c.id,
			name: c.function?.name,
			arguments: c.function?.arguments,
			status: result?.status ?? "success",
			output: result?.output,
			durationMs: result?.durationMs
		};
	});
	return { id: m.id, role: m.role, content: m.content ?? "", status: m.status, error: m.error, generationId: m.generationId, tools, name: m.metadata?.name };
}

/** Older history, prepended without moving what the reader is looking at. */
async function loadOlder() {
	if (historyLoading || !state.currentId || !state.messagesCursor) return;
	historyLoading = true;
	const at = navigation;
	try {
		const page = await api.messages(state.currentId, state.messagesCursor);
		if (at !== navigation) return;
		const fromBottom = els.messages.scrollHeight - els.messages.scrollTop;
		const known = new Set(state.messages.map(m => m.id));
		state.messages.unshift(
			...page.items
				.slice()
				.reverse()
				.map(fromServer)
				.filter(m => !known.has(m.id))
		);
		state.messagesCursor = page.nextCursor;
		renderMessages();
		els.messages.scrollTop = els.messages.scrollHeight - fromBottom;
	} catch (err) {
		showError(err);
	} finally {
		historyLoading = false;
	}
	loadOlderIfVisible();
}

function loadOlderIfVisible() {
	if (state.messagesCursor && sentinelVisible(els.historySentinel, els.messages)) loadOlder();
}

// ---------------------------------------------------------------------------------------------
// Messages

function lastIndexOf(role) {
	for (let i = state.messages.length - 1; i >= 0; i--) if (state.messages[i].role === role) return i;
	return -1;
}

/** What a message shows: a streamed answer shows its live text, not the stored (lagging) one. */
function viewOf(msg) {
	const stream = msg.generationId ? state.streams.get(msg.generationId) : null;
	return stream ? { ...msg, content: stream.text, status: stream.status, error: stream.error, tools: stream.tools } : msg;
}

function retryOptions(msg, index) {
	const canRetry =
		msg.role === "assistant" && index === state.messages.length - 1 && viewOf(msg).status !== "streaming" && lastIndexOf("user") >= 0 && !currentStream();
	return { canRetry, onRetry: retryLast };
}

function renderMessages() {
	els.emptyState.hidden = state.messages.length > 0 || !!state.currentId;
	els.messageList.replaceChildren(...state.messages.map((m, i) => messageView(viewOf(m), retryOptions(m, i))));
}

function renderGeneration(generationId) {
	if (renderQueued.has(generationId)) return;
	renderQueued.add(generationId);
	requestAnimationFrame(() => {
		renderQueued.delete(generationId);
		const index = state.messages.findIndex(m => m.generationId === generationId);
		if (index < 0) return;
		const li = els.messageList.querySelector(`li[data-generation="${CSS.escape(generationId)}"]`);
		if (!li) return renderMessages();
		const follow = nearBottom();
		fillMessage(li, viewOf(state.messages[index]), retryOptions(state.messages[index], index));
		if (follow) scrollToBottom();
	});
}

function currentStream() {
	for (const s of state.streams.values()) if (s.conversationId === state.currentId && s.status === "streaming") return s;
	return null;
}

function updateComposer() {
	const streaming = !!currentStream();
	els.stop.hidden = !streaming;
	els.send.hidden = streaming;
	els.send.disabled = !els.prompt.value.trim();
}

function autosize() {
	els.prompt.style.height = "auto";
	els.prompt.style.height = `${Math.min(els.prompt.scrollHeight, 200)}px`;
	updateComposer();
}

async function sendMessage(content) {
	if (!content.trim() || currentStream()) return;
	if (!socket) return;
	hideBanner();
	const conversationId = state.currentId;
	const at = navigation;
	const local = { id: `local-${Date.now()}`, role: "user", content, status: "completed", pending: true };
	state.messages.push(local);
	renderMessages();
	scrollToBottom();
	const model = els.modelPicker.value || undefined;
	let ack;
	awaitingAcks++;
	try {
		ack = await socket.call("chat:send", { conversationId: conversationId ?? undefined, content, model });
	} catch (err) {
		state.messages = state.messages.filter(m => m !== local);
		if (at === navigation) {
			renderMessages();
			if (!els.prompt.value) {
				els.prompt.value = content;
				autosize();
			}
		}
		if (err.code === "MODEL_NOT_FOUND") loadModels();
		return showError(err);
	} finally {
		awaitingAcks--;
	}
	local.id = ack.messageId;
	local.pending = false;
	const stream = newStream({ conversationId: ack.conversationId, generationId: ack.generationId, messageId: ack.assistantMessageId });
	state.streams.set(stream.generationId, stream);
	savedStreams.put(stream);
	const here = at === navigation;
	if (here && !conversationId) {
		// The first message of a new chat created the conversation.
		state.currentId = ack.conversationId;
		history.replaceState(null, "", `#/c/${ack.conversationId}`);
	}
	if (here) state.messages.push({ id: ack.assistantMessageId, role: "assistant", content: "", status: "streaming", generationId: ack.generationId, tools: [] });
	const conv = touchConversation(ack.conversationId);
	if (!conv.title) {
		// The server titles a new conversation once its first answer is done; until then, a guess.
		conv.title = content.replace(/\s+/g, " ").trim().slice(0, 60);
		conv.provisional = true;
		renderConversations();
	}
	if (here) {
		updateTitle();
		renderMessages();
		updateComposer();
		scrollToBottom();
	}
	for (const [name, payload] of early.get(stream.generationId) ?? []) socketHandlers[name](payload);
	early.delete(stream.generationId);
}

function retryLast() {
	const index = lastIndexOf("user");
	if (index >= 0) sendMessage(state.messages[index].content);
}

async function stopAnswer() {
	const stream = currentStream();
	if (!stream) return;
	els.stop.disabled = true;
	try {
		if (socket?.connected) await socket.call("generation:cancel", { generationId: stream.generationId });
		else await api.cancel(stream.generationId);
	} catch (err) {
		showError(err);
	} finally {
		els.stop.disabled = false;
	}
}

// ---------------------------------------------------------------------------------------------
// Streams: apply numbered events exactly once, resume after the last number applied

/** Tracks answers the history shows as still streaming (e.g. after a reload, or from another tab). */
function attachStreams(messages) {
	for (const msg of messages) {
		if (msg.role !== "assistant" || !msg.generationId) continue;
		const known = state.streams.get(msg.generationId);
		if (msg.status === "streaming" && !known) {
			// Nothing kept for it: rebuild the whole text from the first chunk.
			const stream = newStream({ conversationId: msg.conversationId ?? state.currentId, generationId: msg.generationId, messageId: msg.id });
			state.streams.set(stream.generationId, stream);
			subscribe(stream);
		} else if (msg.status !== "streaming" && known) {
			// It ended while this page was away: the stored message is final.
			state.streams.delete(msg.generationId);
			forget(known);
		}
	}
}

function forget(stream) {
	if (savedStreams.all()[stream.conversationId]?.generationId === stream.generationId) savedStreams.remove(stream.conversationId);
}

function resubscribeAll() {
	for (const stream of state.streams.values()) if (stream.status === "streaming") subscribe(stream);
}

async function subscribe(stream) {
	if (!socket?.connected) return; // resubscribed on (re)connection
	try {
		await socket.call("generation:subscribe", { generationId: stream.generationId, after: stream.lastSeq });
	} catch (err) {
		if (err.code === "NOT_FOUND") recover(stream);
		else if (err.code !== "OFFLINE") setTimeout(() => stream.status === "streaming" && subscribe(stream), 2000);
	}
}

/** The generation's log cannot be read: take its stored state instead. */
async function recover(stream) {
	try {
		const g = await api.generation(stream.generationId);
		if (g.status === "streaming") {
			setTimeout(() => stream.status === "streaming" && subscribe(stream), 2000);
			return;
		}
		stream.text = g.content ?? stream.text;
		finish(stream, g.status, null);
	} catch (err) {
		if (err.code === "NOT_FOUND") finish(stream, "interrupted", null);
	}
}

function finish(stream, status, error) {
	endStream(stream, status, error);
	ended(stream);
}

/** The page after a stream ended (its final state is set). */
function ended(stream) {
	const { status, error } = stream;
	state.streams.delete(stream.generationId);
	forget(stream);
	const msg = state.messages.find(m => m.generationId === stream.generationId);
	if (msg) Object.assign(msg, { content: stream.text, status: stream.status, error, tools: stream.tools });
	if (stream.conversationId === state.currentId) {
		renderMessages();
		updateComposer();
		if (nearBottom()) scrollToBottom();
		announce(status === "completed" ? "Answer complete" : status === "cancelled" ? "Answer stopped" : `Answer ${status}`);
	}
	loadUsage();
	refreshTitle(stream.conversationId);
}

/** Applies event `seq` to its stream once, in order (stream.js); a gap means something was missed: read again. */
function applyNumbered(name, event) {
	const stream = state.streams.get(event.generationId);
	if (!stream) {
		if (awaitingAcks > 0) {
			const list = early.get(event.generationId) ?? [];
			if (list.length < 500) list.push([name, event]);
			early.set(event.generationId, list);
		}
		return;
	}
	const outcome = applyEvent(stream, name, event);
	if (outcome === GAP) subscribe(stream);
	if (outcome !== APPLIED) return;
	if (stream.status !== "streaming") return ended(stream);
	savedStreams.put(stream);
	if (stream.conversationId === state.currentId) renderGeneration(stream.generationId);
}

const socketHandlers = {
	...Object.fromEntries(NUMBERED_EVENTS.map(name => [name, e => applyNumbered(name, e)])),
	"generation:error": e => {
		// Without a number it is about reading the log, not the answer: fall back to the stored message.
		if (typeof e.seq !== "number") {
			const stream = state.streams.get(e.generationId);
			if (stream) recover(stream);
			return;
		}
		applyNumbered("generation:error", e);
	}
};

// ---------------------------------------------------------------------------------------------
// Jobs: reports and exports of a conversation, followed live and by polls (jobs.js)

function renderJobs() {
	const jobs = [...state.jobs.values()];
	els.jobList.replaceChildren(...jobs.map(job => jobItem(job, { onDownload: downloadJob, onCancel: cancelJob, onDismiss: forgetJob })));
	els.jobs.hidden = jobs.length === 0;
}

async function startJob(kind, input, what) {
	setMenu(false);
	const conversationId = state.currentId;
	if (!conversationId) return;
	const title = state.conversations.find(c => c.id === conversationId)?.title || "New chat";
	try {
		const { jobId } = await api.startJob(kind, { ...input, conversationId });
		if (!socket) return;
		const job = newJob({ id: jobId, kind, label: `${what} · ${title}`, conversationId });
		state.jobs.set(jobId, job);
		savedJobs.put(job);
		renderJobs();
		schedulePoll(job);
		announce(`${what} started`);
	} catch (err) {
		showError(err);
	}
}

/** The jobs this tab started before a reload: their state is asked for at once. */
function restoreJobs() {
	for (const saved of savedJobs.all()) if (saved?.id && !state.jobs.has(saved.id)) state.jobs.set(saved.id, newJob(saved));
	renderJobs();
	pollJobsNow();
}

function pollJobsNow() {
	for (const job of state.jobs.values()) if (!isFinished(job)) schedulePoll(job, 0);
}

/** (Re)arms the job's next poll: soon while the socket is away, as a safety net while it is up, never once finished. */
function schedulePoll(job, delay = nextPollMs(job, { connected: !!socket?.connected })) {
	clearTimeout(pollTimers.get(job.id));
	pollTimers.delete(job.id);
	if (delay === null || !socket) return;
	pollTimers.set(
		job.id,
		setTimeout(() => pollJob(job), delay)
	);
}

async function pollJob(job) {
	pollTimers.delete(job.id);
	try {
		const record = await api.job(job.id);
		if (state.jobs.get(job.id) !== job) return; // dismissed (or signed out) meanwhile
		updateJob(job, () => applySnapshot(job, record));
	} catch (err) {
		if (err.code === "NOT_FOUND") return forgetJob(job);
		// Any other failure (offline, an outage): the next poll tries again.
	}
	schedulePoll(job);
}

/** Applies news to a job; renders and announces what changed. */
function updateJob(job, apply) {
	const wasFinished = isFinished(job);
	if (!apply()) return;
	renderJobs();
	if (wasFinished || !isFinished(job)) return;
	schedulePoll(job, null);
	announce(job.state === "succeeded" ? `${job.label} is ready to download` : `${job.label}: ${job.state}`);
}

async function downloadJob(job) {
	try {
		const { blob, contentDisposition } = await download(`/api/jobs/${encodeURIComponent(job.id)}/result`);
		const url = URL.createObjectURL(blob);
		const link = h("a", { href: url, download: downloadName(contentDisposition, job), hidden: true });
		document.body.append(link);
		link.click();
		link.remove();
		// The click hands the file to the browser; the URL is freed once that surely happened.
		setTimeout(() => URL.revokeObjectURL(url), 60_000);
	} catch (err) {
		showError(err);
	}
}

async function cancelJob(job) {
	try {
		await api.cancelJob(job.id);
	} catch (err) {
		// It finished meanwhile: the poll below shows how.
		if (err.code !== "CONFLICT") showError(err);
	}
	schedulePoll(job, 0);
}

function forgetJob(job) {
	clearTimeout(pollTimers.get(job.id));
	pollTimers.delete(job.id);
	state.jobs.delete(job.id);
	savedJobs.remove(job.id);
	renderJobs();
}

const jobHandlers = {
	"job:progress": e => {
		const job = state.jobs.get(e?.jobId);
		if (!job) return;
		updateJob(job, () => applyProgress(job, e.progress));
		schedulePoll(job);
	},
	"job:done": e => {
		const job = state.jobs.get(e?.jobId);
		if (job) updateJob(job, () => applyDone(job, { state: e.state, error: e.error }));
	}
};

// ---------------------------------------------------------------------------------------------
// Wiring

function wire() {
	els.authForm.addEventListener("submit", submitAuth);
	els.authSwitch.addEventListener("click", () => setAuthMode(authMode === "signin" ? "signup" : "signin"));
	els.signOut.addEventListener("click", doSignOut);
	els.newChat.addEventListener("click", () => go(null));
	els.menuToggle.addEventListener("click", () => setSidebar(!els.appView.classList.contains("sidebar-open")));
	els.backdrop.addEventListener("click", () => setSidebar(false));
	// Picking a conversation closes the drawer (also the one already open, which changes no hash).
	els.convList.addEventListener("click", event => event.target.closest(".conv__open") && setSidebar(false));
	els.bannerClose.addEventListener("click", hideBanner);
	els.modelPicker.addEventListener("change", () => preferences.setModel(els.modelPicker.value));
	els.stop.addEventListener("click", stopAnswer);
	els.jobReport.addEventListener("click", () => startJob("report", {}, "Report"));
	els.jobExportMd.addEventListener("click", () => startJob("export", { format: "markdown" }, "Export"));
	els.jobExportJson.addEventListener("click", () => startJob("export", { format: "json" }, "Export (JSON)"));
	els.convMenuButton.addEventListener("click", () => setMenu(!menuOpen()));
	// The menu closes on a click elsewhere and on Escape, as menus do.
	document.addEventListener("click", event => {
		if (menuOpen() && !els.convMenu.contains(event.target)) setMenu(false);
	});
	els.composer.addEventListener("submit", event => {
		event.preventDefault();
		const content = els.prompt.value;
		if (!content.trim() || currentStream()) return;
		els.prompt.value = "";
		autosize();
		sendMessage(content);
	});
	els.prompt.addEventListener("input", autosize);
	els.prompt.addEventListener("keydown", event => {
		if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
			event.preventDefault();
			els.composer.requestSubmit();
		} else if (event.key === "Escape" && currentStream()) {
			stopAnswer();
		}
	});
	document.addEventListener("keydown", event => {
		if (event.key === "Escape" && menuOpen()) {
			setMenu(false);
			els.convMenuButton.focus();
		} else if (event.key === "Escape" && els.appView.classList.contains("sidebar-open")) setSidebar(false);
	});
	window.addEventListener("hashchange", route);
	new IntersectionObserver(entries => entries.some(e => e.isIntersecting) && loadMoreConversations(), { root: els.convScroll }).observe(els.convSentinel);
	new IntersectionObserver(entries => entries.some(e => e.isIntersecting) && loadOlder(), { root: els.messages }).observe(els.historySentinel);
	onSignedOut(reason => {
		leaveApp();
		showAuth(reason);
	});
}

wire();
setAuthMode("signin");
if (resume()) enterApp();
else showAuth();
