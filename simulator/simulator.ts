/**
 * chatmesh's OpenAI-compatible inference simulator: a plain node:http server that answers
 * chat completions (streamed or not, with tool calls), models, embeddings and moderations
 * deterministically, with knobs for latency, length, errors and hangs, and a request log.
 * Tests and benchmarks talk to it over HTTP instead of mocking the LLM.
 *
 * Routes:
 *   POST /v1/chat/completions, GET /v1/models, GET /v1/models/:id, POST /v1/embeddings,
 *   POST /v1/moderations — OpenAI wire format, logged.
 *   GET|DELETE /_simulator/requests — the request log (oldest first) / clear it.
 *   GET|POST|DELETE /_simulator/config — current knobs / change some / reset to start values.
 *   GET /_simulator/health — liveness.
 *
 * Per-request headers (win over process knobs for chat completions): x-simulator-ttft-ms,
 * x-simulator-token-interval-ms, x-simulator-output-tokens, x-simulator-error-status,
 * x-simulator-error-rate, x-simulator-hang, x-simulator-hang-after-tokens, x-simulator-echo.
 * An invalid value, or an unknown x-simulator-* header (a typo), is a 400 naming the header.
 * The knobs apply to chat completions only; embeddings and moderations answer at once.
 *
 * What a chat request gets, first rule that applies:
 *   1. Last message is a user message naming offered function tools (whole word, any case):
 *      one tool call per named tool in prompt order, finish_reason "tool_calls". Arguments: the
 *      JSON object right after the name in the prompt, else built from the schema (required
 *      strings = the prompt text, numbers 0, booleans false). tool_choice "none" disables this.
 *   2. Last message is a tool message: "Based on the tool results: " + the trailing tool
 *      messages' contents joined by "; ", then `outputTokens` seeded words.
 *   3. x-simulator-echo: the last user message's text, token by token (exactly that text).
 *   4. Otherwise `outputTokens` lowercase words seeded by a hash of the messages.
 * max_tokens / max_completion_tokens cut text answers (finish_reason "length"). Tokens are
 * words with their leading whitespace; completion_tokens = tokens emitted (tool calls: deltas).
 * Error injection happens after validation and before anything is streamed.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { randomBytes } from "node:crypto";
import { handleChatCompletion, type ChatEnvironment } from "./chat";
import { embeddingInputs, embeddingTokens, embeddingVector, float32ToBase64 } from "./embeddings";
import { BodyError, readBody, sendError, sendJson, type RequestContext } from "./http";
import { loggedHeaders, RequestLog, type SimulatorRequestLogEntry } from "./log";
import { moderate, moderationInputs } from "./moderation";
import {
	DEFAULT_HOST,
	DEFAULT_KNOBS,
	ErrorGate,
	MAX_EMBEDDING_DIMENSIONS,
	pickKnobs,
	SimulatorConfigError,
	validateKnobs,
	type SimulatorKnobs,
	type SimulatorOptions
} from "./options";

export type { SimulatorOptions } from "./options";
export type { SimulatorRequestLogEntry } from "./log";

export interface SimulatorHandle {
	/** e.g. http://127.0.0.1:PORT */
	readonly url: string;
	/** `url + "/v1"`, for OpenAI clients. */
	readonly baseURL: string;
	readonly port: number;
	/** A snapshot of the current options (host, port and knobs). */
	readonly options: Readonly<SimulatorOptions>;
	/** Changes process-level knobs; throws SimulatorConfigError on an invalid value. Returns the new options. */
	configure(partial: Partial<SimulatorKnobs>): Readonly<SimulatorOptions>;
	/** Restores the knobs the simulator was started with. */
	resetConfig(): Readonly<SimulatorOptions>;
	/** Copies of the request log entries, oldest first. */
	requests(): SimulatorRequestLogEntry[];
	clearRequests(): void;
	/** Stops answering, destroys open sockets and clears every timer. Idempotent. */
	close(): Promise<void>;
}

/** Largest request body accepted. */
const MAX_BODY_BYTES = 16 * 1024 * 1024;

/** Fixed `created` of the listed models, so /v1/models is stable. */
const MODELS_CREATED = 1_735_689_600;

const OWNED_BY = "chatmesh-simulator";

function isRecord(value: unknown): value is Record<string, unknown> {
	return typeof value === "object" && value !== null && !Array.isArray(value);
}

function connectHost(host: string): string {
	if (host === "0.0.0.0" || host === "") return "127.0.0.1";
	if (host === "::") return "[::1]";
	return host.includes(":") ? `[${host}]` : host;
}

export async function startSimulator(options: Partial<SimulatorOptions> = {}): Promise<SimulatorHandle> {
	const { host = DEFAULT_HOST, port = 0, ...knobInput } = options;
	if (typeof host !== "string") throw new SimulatorConfigError("host", "host must be a string");
	if (!Number.isInteger(port) || port < 0 || port > 65535) throw new SimulatorConfigError("port", `Invalid port: ${String(port)}`);
	const startKnobs: SimulatorKnobs = pickKnobs({ ...DEFAULT_KNOBS, ...validateKnobs(knobInput) });
	let knobs: SimulatorKnobs = pickKnobs(startKnobs);

	const log = new RequestLog();
	const errorGate = new ErrorGate();
	const sockets = new Set<Socket>();
	const running = new Set<() => void>();
	/** Responses not yet closed; close() waits for their "close" so the log is final when it resolves. */
	const openResponses = new Set<ServerResponse>();
	const idPrefix = randomBytes(4).toString("hex");
	let requestCounter = 0;
	let closing: Promise<void> | null = null;
	let boundPort = port;

	const chatEnvironment = (): ChatEnvironment => ({
		knobs,
		errorGate,
		track(stop) {
			running.add(stop);
			return () => running.delete(stop);
		}
	});

	const configure = (partial: Partial<SimulatorKnobs>): Readonly<SimulatorOptions> => {
		const valid = validateKnobs(partial);
		knobs = pickKnobs({ ...knobs, ...valid });
		if ("errorRate" in valid || "errorStatus" in valid) errorGate.reset();
		return snapshot();
	};

	const snapshot = (): Readonly<SimulatorOptions> => Object.freeze({ host, port: boundPort, ...pickKnobs(knobs) });

	/** What GET /_simulator/config shows: the knobs, with the API key reduced to a flag. */
	const configView = () => {
		const { apiKey, ...rest } = pickKnobs(knobs);
		return { host, port: boundPort, ...rest, apiKeyRequired: apiKey !== null };
	};

	// ------------------------------------------------------------------------------------------
	// Routes
	// ------------------------------------------------------------------------------------------

	async function readJson(ctx: RequestContext): Promise<{ ok: true; body: unknown } | { ok: false }> {
		let raw: Buffer;
		try {
			raw = await readBody(ctx.req, MAX_BODY_BYTES);
		} catch (error) {
			const status = error instanceof BodyError ? error.status : 400;
			if (status !== 499) sendError(ctx, status, error instanceof Error ? error.message : "Bad request body", null, "invalid_body");
			return { ok: false };
		}
		try {
			return { ok: true, body: JSON.parse(raw.toString("utf8")) as unknown };
		} catch {
			sendError(ctx, 400, "We could not parse the JSON body of your request. The body must be valid JSON.", null, "invalid_json");
			return { ok: false };
		}
	}

	async function handleV1(ctx: RequestContext, method: string, path: string): Promise<void> {
		if (knobs.apiKey !== null && ctx.req.headers.authorization !== `Bearer ${knobs.apiKey}`) {
			sendError(ctx, 401, "Incorrect API key provided.", null, "invalid_api_key");
			return;
		}

		if (path === "/v1/chat/completions") {
			if (method !== "POST") return methodNotAllowed(ctx, method, path, "POST");
			const parsed = await readJson(ctx);
			if (!parsed.ok) return;
			handleChatCompletion(ctx, parsed.body, chatEnvironment());
			return;
		}

		if (path === "/v1/models") {
			if (method !== "GET") return methodNotAllowed(ctx, method, path, "GET");
			sendJson(ctx, 200, {
				object: "list",
				data: knobs.models.map(id => ({ id, object: "model", created: MODELS_CREATED, owned_by: OWNED_BY }))
			});
			return;
		}

		if (path.startsWith("/v1/models/")) {
			if (method !== "GET") return methodNotAllowed(ctx, method, path, "GET");
			let id: string;
			try {
				id = decodeURIComponent(path.slice("/v1/models/".length));
			} catch {
				id = path.slice("/v1/models/".length);
			}
			if (ctx.entry) ctx.entry.model = id;
			if (!knobs.models.includes(id)) {
				sendError(ctx, 404, `The model '${id}' does not exist`, "model", "model_not_found");
				return;
			}
			sendJson(ctx, 200, { id, object: "model", created: MODELS_CREATED, owned_by: OWNED_BY });
			return;
		}

		if (path === "/v1/embeddings") {
			if (method !== "POST") return methodNotAllowed(ctx, method, path, "POST");
			const parsed = await readJson(ctx);
			if (parsed.ok) handleEmbeddings(ctx, parsed.body);
			return;
		}

		if (path === "/v1/moderations") {
			if (method !== "POST") return methodNotAllowed(ctx, method, path, "POST");
			const parsed = await readJson(ctx);
			if (parsed.ok) handleModerations(ctx, parsed.body);
			return;
		}

		notFound(ctx, method, path);
	}

	function handleEmbeddings(ctx: RequestContext, body: unknown): void {
		if (!isRecord(body)) {
			sendError(ctx, 400, "The request body must be a JSON object.", null, "invalid_json");
			return;
		}
		const model = typeof body.model === "string" ? body.model : "sim-embedding";
		if (ctx.entry) ctx.entry.model = model;
		const inputs = embeddingInputs(body.input);
		if (!inputs) {
			sendError(ctx, 400, "'input' must be a string, an array of strings or an array of token arrays.", "input", "invalid_value");
			return;
		}
		let dimensions = knobs.embeddingDimensions;
		if (body.dimensions !== undefined && body.dimensions !== null) {
			const d = body.dimensions;
			if (typeof d !== "number" || !Number.isInteger(d) || d < 1 || d > MAX_EMBEDDING_DIMENSIONS) {
				sendError(ctx, 400, `'dimensions' must be an integer between 1 and ${MAX_EMBEDDING_DIMENSIONS}.`, "dimensions", "invalid_value");
				return;
			}
			dimensions = d;
		}
		const format = body.encoding_format ?? "float";
		if (format !== "float" && format !== "base64") {
			sendError(ctx, 400, "'encoding_format' must be 'float' or 'base64'.", "encoding_format", "invalid_value");
			return;
		}
		const data = inputs.map((input, index) => {
			const vector = embeddingVector(input, dimensions);
			return { object: "embedding", index, embedding: format === "base64" ? float32ToBase64(vector) : Array.from(vector) };
		});
		const tokens = embeddingTokens(body.input, inputs);
		if (ctx.entry) ctx.entry.promptTokens = tokens;
		sendJson(ctx, 200, { object: "list", data, model, usage: { prompt_tokens: tokens, total_tokens: tokens } });
	}

	function handleModerations(ctx: RequestContext, body: unknown): void {
		if (!isRecord(body)) {
			sendError(ctx, 400, "The request body must be a JSON object.", null, "invalid_json");
			return;
		}
		const model = typeof body.model === "string" ? body.model : "omni-moderation-latest";
		if (ctx.entry) ctx.entry.model = model;
		const inputs = moderationInputs(body.input);
		if (!inputs) {
			sendError(ctx, 400, "'input' must be a string, an array of strings or an array of content parts.", "input", "invalid_value");
			return;
		}
		sendJson(ctx, 200, {
			id: `modr-${randomBytes(12).toString("hex")}`,
			model,
			results: inputs.map(text => moderate(text, knobs.flaggedWords))
		});
	}

	async function handleAdmin(ctx: RequestContext, method: string, path: string): Promise<void> {
		if (path === "/_simulator/requests") {
			if (method === "GET") return sendJson(ctx, 200, log.list());
			if (method === "DELETE") {
				const cleared = log.list().length;
				log.clear();
				return sendJson(ctx, 200, { cleared });
			}
			return methodNotAllowed(ctx, method, path, "GET, DELETE");
		}
		if (path === "/_simulator/config") {
			if (method === "GET") return sendJson(ctx, 200, configView());
			if (method === "DELETE") {
				knobs = pickKnobs(startKnobs);
				errorGate.reset();
				return sendJson(ctx, 200, configView());
			}
			if (method === "POST" || method === "PUT" || method === "PATCH") {
				const parsed = await readJson(ctx);
				if (!parsed.ok) return;
				try {
					const valid = validateKnobs(parsed.body, true);
					configure(valid);
				} catch (error) {
					if (error instanceof SimulatorConfigError) return sendError(ctx, 400, error.message, error.key, "invalid_config");
					throw error;
				}
				return sendJson(ctx, 200, configView());
			}
			return methodNotAllowed(ctx, method, path, "GET, POST, DELETE");
		}
		if (path === "/_simulator/health") {
			if (method === "GET") return sendJson(ctx, 200, { ok: true });
			return methodNotAllowed(ctx, method, path, "GET");
		}
		notFound(ctx, method, path);
	}

	function notFound(ctx: RequestContext, method: string, path: string): void {
		sendError(ctx, 404, `Unknown request URL: ${method} ${path}.`, null, "unknown_url");
	}

	function methodNotAllowed(ctx: RequestContext, method: string, path: string, allow: string): void {
		if (ctx.res.headersSent) return;
		sendJson(
			ctx,
			405,
			{ error: { message: `Method ${method} is not allowed on ${path}.`, type: "invalid_request_error", param: null, code: "method_not_allowed" } },
			{ allow }
		);
	}

	async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
		const method = (req.method ?? "GET").toUpperCase();
		const rawUrl = req.url ?? "/";
		const queryAt = rawUrl.indexOf("?");
		const path = queryAt >= 0 ? rawUrl.slice(0, queryAt) : rawUrl;
		const requestId = `req_${idPrefix}${(++requestCounter).toString(16).padStart(8, "0")}`;
		res.on("error", () => {}); // a write racing a disconnect must never crash the process
		openResponses.add(res);
		res.once("close", () => openResponses.delete(res));

		let entry: SimulatorRequestLogEntry | null = null;
		if (path === "/v1" || path.startsWith("/v1/")) {
			const created: SimulatorRequestLogEntry = {
				id: requestId,
				at: Date.now(),
				method,
				path,
				model: null,
				stream: false,
				messages: null,
				tools: [],
				headers: loggedHeaders(req.headers),
				status: null,
				aborted: false,
				completionTokens: 0,
				promptTokens: 0,
				finishReason: null,
				finished: false,
				durationMs: null
			};
			entry = created;
			log.add(created);
			// Runs while the socket close is processed, so the log is current by then.
			res.once("close", () => {
				created.durationMs = Date.now() - created.at;
				if (res.writableFinished) created.finished = true;
				else created.aborted = true;
			});
		}
		const ctx: RequestContext = { req, res, requestId, entry };

		try {
			if (entry) await handleV1(ctx, method, path);
			else if (path.startsWith("/_simulator/")) await handleAdmin(ctx, method, path);
			else notFound(ctx, method, path);
		} catch (error) {
			if (!res.headersSent) {
				sendError(ctx, 500, `Simulator internal error: ${error instanceof Error ? error.message : String(error)}`, null, "internal_error");
			} else {
				res.destroy();
			}
		}
	}

	// ------------------------------------------------------------------------------------------
	// Server
	// ------------------------------------------------------------------------------------------

	// Idle keep-alive connections are kept longer than clients' pools keep them, like a serving
	// stack behind a load balancer: a server closing first races the client's next request.
	const server = createServer({ noDelay: true, requestTimeout: 0, keepAliveTimeout: 65_000, headersTimeout: 66_000 }, (req, res) => {
		if (closing) {
			res.destroy();
			return;
		}
		route(req, res).catch(() => res.destroy());
	});
	server.on("connection", (socket: Socket) => {
		socket.setNoDelay(true);
		sockets.add(socket);
		socket.once("close", () => sockets.delete(socket));
	});

	await new Promise<void>((resolve, reject) => {
		const onError = (error: Error) => reject(error);
		server.once("error", onError);
		server.listen(port, host, () => {
			server.off("error", onError);
			resolve();
		});
	});
	server.on("error", () => {}); // after listening, errors surface per socket

	boundPort = (server.address() as AddressInfo).port;
	const url = `http://${connectHost(host)}:${boundPort}`;

	const close = (): Promise<void> => {
		closing ??= (async () => {
			const responsesClosed = [...openResponses].map(res => new Promise<void>(resolve => res.once("close", () => resolve())));
			const serverClosed = new Promise<void>(resolve => server.close(() => resolve()));
			for (const stop of [...running]) stop();
			running.clear();
			server.closeAllConnections();
			for (const socket of sockets) socket.destroy();
			sockets.clear();
			await Promise.all([serverClosed, ...responsesClosed]);
		})();
		return closing;
	};

	return {
		url,
		baseURL: `${url}/v1`,
		port: boundPort,
		get options() {
			return snapshot();
		},
		configure,
		resetConfig() {
			knobs = pickKnobs(startKnobs);
			errorGate.reset();
			return snapshot();
		},
		requests: () => log.list(),
		clearRequests: () => log.clear(),
		close
	};
}
