/**
 * Streamed chat completions from an OpenAI-compatible endpoint, read without the SDK: undici's
 * `request` (one keep-alive pool per provider) and eventsource-parser over the response bytes,
 * each `data:` line parsed once with `JSON.parse` and handed over synchronously. This is the
 * token path of every generation; the SDK's fetch, web-stream decoders and async iterators cost
 * about a third of the llm node's CPU per stream (BENCHMARKS.md). The SDK stays for everything
 * else a provider is asked (`/models`).
 *
 * Failures are thrown as the three errors below (or undici's own timeout errors), which
 * ./upstream-errors.ts maps to chatmesh's upstream codes.
 */
import { StringDecoder } from "node:string_decoder";
import { createParser } from "eventsource-parser";
import type { ChatCompletionChunk } from "openai/resources/chat/completions";
import { Agent, request } from "undici";
import type { ProviderConfig } from "../../lib/config";

/** The provider answered with a non-2xx status. */
export class ProviderStatusError extends Error {
	constructor(
		readonly status: number,
		body: string
	) {
		super(`status ${status}: ${body.slice(0, 300)}`);
		this.name = "ProviderStatusError";
	}
}

/** The request never got an answer: refused, reset or unreachable before the status line. */
export class ProviderConnectionError extends Error {
	constructor(cause: unknown) {
		super(`connection failed: ${(cause as Error)?.message ?? String(cause)}`, { cause });
		this.name = "ProviderConnectionError";
	}
}

/** The stream itself said it failed (an `error` object in a 200 stream) or sent something unreadable. */
export class ProviderStreamError extends Error {
	constructor(message: string) {
		super(message);
		this.name = "ProviderStreamError";
	}
}

export interface ChatStreamEndpoint {
	/** The provider's `/chat/completions` URL. */
	url: string;
	headers: Record<string, string>;
	dispatcher: Agent;
}

/** The endpoint of one provider, with its own connection pool. */
export function chatStreamEndpoint(config: ProviderConfig, connectTimeoutMs: number): ChatStreamEndpoint {
	return {
		url: `${config.baseURL.replace(/\/+$/, "")}/chat/completions`,
		headers: {
			"content-type": "application/json",
			accept: "text/event-stream",
			// Local servers (vLLM, Ollama, the simulator) accept any key; some insist on the header.
			authorization: `Bearer ${config.apiKey ?? "no-key"}`
		},
		// The generation's own first-token and idle timers bound the headers and the body.
		dispatcher: new Agent({ connect: { timeout: connectTimeoutMs }, headersTimeout: 0, bodyTimeout: 0, keepAliveTimeout: 30_000 })
	};
}

/**
 * POSTs `body` and calls `onChunk` for every chunk of the answer, in order, as it arrives.
 * Resolves at `[DONE]` or at the end of the body (the caller decides whether that was complete);
 * rejects on a non-2xx status, a connection failure, an error event, or the signal.
 */
export async function streamChatCompletion(
	endpoint: ChatStreamEndpoint,
	body: object,
	signal: AbortSignal,
	onChunk: (chunk: ChatCompletionChunk) => void
): Promise<void> {
	let response: Awaited<ReturnType<typeof request>>;
	try {
		response = await request(endpoint.url, {
			method: "POST",
			headers: endpoint.headers,
			body: JSON.stringify(body),
			signal,
			dispatcher: endpoint.dispatcher
		});
	} catch (err) {
		if (signal.aborted || isUndiciTimeout(err)) throw err;
		throw new ProviderConnectionError(err);
	}
	const { statusCode, body: stream } = response;
	if (statusCode < 200 || statusCode >= 300) {
		const text = await stream.text().catch(() => "");
		throw new ProviderStatusError(statusCode, text);
	}

	await new Promise<void>((resolve, reject) => {
		const decoder = new StringDecoder("utf8");
		let settled = false;
		const settle = (err?: Error) => {
			if (settled) return;
			settled = true;
			if (err) {
				stream.destroy();
				reject(err);
			} else resolve();
		};
		const parser = createParser({
			onEvent(event) {
				if (settled) return;
				if (event.data === "[DONE]") return settle();
				let chunk: ChatCompletionChunk & { error?: { message?: string } };
				try {
					chunk = JSON.parse(event.data);
				} catch {
					return settle(new ProviderStreamError("unreadable chunk in the stream"));
				}
				if (chunk.error) return settle(new ProviderStreamError(`error event in the stream: ${chunk.error.message ?? "unknown"}`));
				try {
					onChunk(chunk);
				} catch (err) {
					settle(err as Error);
				}
			}
		});
		// After [DONE] the rest of the body is read and dropped, so the connection goes back to the pool.
		stream.on("data", (bytes: Buffer) => {
			if (!settled) parser.feed(decoder.write(bytes));
		});
		stream.once("end", () => {
			if (!settled) parser.feed(decoder.end());
			settle();
		});
		stream.once("error", err => settle(err));
	});
}

const UNDICI_TIMEOUTS = new Set(["UND_ERR_CONNECT_TIMEOUT", "UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT"]);

export function isUndiciTimeout(err: unknown): boolean {
	return UNDICI_TIMEOUTS.has((err as { code?: string })?.code ?? "");
}
