/**
 * What the app remembers. The session (tokens and user) lives in localStorage, so it survives a
 * reload and is shared by tabs. Answers still streaming live in sessionStorage, per tab and per
 * conversation: the generation id, the last chunk number seen and the text up to it, so a reload
 * resumes exactly after that chunk. The jobs this tab started are kept there too. Everything else is the in-memory state of this page.
 */
const SESSION_KEY = "chatmesh.session";
const STREAMS_KEY = "chatmesh.streams";
const MODEL_KEY = "chatmesh.model";
const JOBS_KEY = "chatmesh.jobs";

function read(storage, key) {
	try {
		const raw = storage.getItem(key);
		return raw ? JSON.parse(raw) : null;
	} catch {
		return null;
	}
}

function write(storage, key, value) {
	try {
		if (value === null || value === undefined) storage.removeItem(key);
		else storage.setItem(key, JSON.stringify(value));
	} catch {
		// Storage full or disabled: the app still works, it only forgets on reload.
	}
}

export const SESSION_STORAGE_KEY = SESSION_KEY;

/** `{ user, accessToken, accessExpiresAt, refreshToken }` or null. */
export const savedSession = {
	load: () => read(localStorage, SESSION_KEY),
	save: session => write(localStorage, SESSION_KEY, session),
	clear: () => write(localStorage, SESSION_KEY, null)
};

/** In-flight answers by conversation id: `{ generationId, messageId, lastSeq, text, tools }`. */
export const savedStreams = {
	all: () => read(sessionStorage, STREAMS_KEY) ?? {},
	put(stream) {
		const all = savedStreams.all();
		all[stream.conversationId] = {
			generationId: stream.generationId,
			messageId: stream.messageId,
			lastSeq: stream.lastSeq,
			text: stream.text,
			tools: stream.tools
		};
		write(sessionStorage, STREAMS_KEY, all);
	},
	remove(conversationId) {
		const all = savedStreams.all();
		if (!(conversationId in all)) return;
		delete all[conversationId];
		write(sessionStorage, STREAMS_KEY, all);
	},
	clear: () => write(sessionStorage, STREAMS_KEY, null)
};

/** Jobs this tab started, to find them again after a reload: `[{ id, kind, label, conversationId }]`. */
export const savedJobs = {
	all: () => read(sessionStorage, JOBS_KEY) ?? [],
	put(job) {
		const all = savedJobs.all().filter(j => j.id !== job.id);
		all.push({ id: job.id, kind: job.kind, label: job.label, conversationId: job.conversationId });
		write(sessionStorage, JOBS_KEY, all);
	},
	remove(id) {
		write(
			sessionStorage,
			JOBS_KEY,
			savedJobs.all().filter(j => j.id !== id)
		);
	},
	clear: () => write(sessionStorage, JOBS_KEY, null)
};

export const preferences = {
	model: () => localStorage.getItem(MODEL_KEY) ?? "",
	setModel: model => (model ? localStorage.setItem(MODEL_KEY, model) : localStorage.removeItem(MODEL_KEY))
};

/** The page's state; views read it, app.js changes it. */
export const state = {
	user: null,
	/** Conversations, most recently active first, as far as the list has been scrolled. */
	conversations: [],
	nextCursor: null,
	listComplete: false,
	listLoading: false,
	/** The open conversation (null: a new chat not sent yet). */
	currentId: null,
	/** The open conversation's messages, oldest first (history pages prepended). */
	messages: [],
	messagesCursor: null,
	/** Answers being streamed, by generation id (any conversation). */
	streams: new Map(),
	/** Jobs started from this tab, by id, oldest first (jobs.js). */
	jobs: new Map(),
	models: []
};
