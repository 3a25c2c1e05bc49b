/**
 * A Zipkin collector for tests: a plain node:http server that takes `POST /api/v2/spans` (Zipkin's
 * v2 JSON, as Zipkin, Jaeger's Zipkin collector and Tempo do) and keeps every span it receives.
 * It checks what a real collector checks first: a JSON array of spans with hex ids.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

export interface ZipkinSpan {
	name: string;
	kind?: string;
	traceId: string;
	id: string;
	parentId?: string;
	timestamp: number;
	duration: number;
	localEndpoint?: { serviceName?: string };
	tags: Record<string, string>;
}

export interface ZipkinReceiver {
	/** Base URL, for TRACING_ENDPOINT. */
	url: string;
	spans: ZipkinSpan[];
	/** Posts refused because they were not what Zipkin accepts, with the reason. */
	rejected: string[];
	close(): Promise<void>;
}

const HEX_TRACE = /^(?:[0-9a-f]{16}|[0-9a-f]{32})$/;
const HEX_SPAN = /^[0-9a-f]{16}$/;

/** Why Zipkin would refuse this span, or undefined when it is well-formed. */
function problemOf(span: Partial<ZipkinSpan>): string | undefined {
	if (typeof span.traceId !== "string" || !HEX_TRACE.test(span.traceId)) return `traceId ${span.traceId}`;
	if (typeof span.id !== "string" || !HEX_SPAN.test(span.id)) return `id ${span.id}`;
	if (span.parentId !== undefined && (typeof span.parentId !== "string" || !HEX_SPAN.test(span.parentId))) return `parentId ${span.parentId}`;
	if (typeof span.timestamp !== "number" || typeof span.duration !== "number") return "timestamp or duration";
	if (Object.values(span.tags ?? {}).some(v => typeof v !== "string")) return "a tag that is not a string";
	return undefined;
}

export async function startZipkinReceiver(): Promise<ZipkinReceiver> {
	const spans: ZipkinSpan[] = [];
	const rejected: string[] = [];
	const server = createServer((req, res) => {
		const chunks: Buffer[] = [];
		req.on("data", (c: Buffer) => chunks.push(c));
		req.on("end", () => {
			if (req.method !== "POST" || req.url !== "/api/v2/spans") {
				res.writeHead(404).end();
				return;
			}
			try {
				const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Partial<ZipkinSpan>[];
				if (!Array.isArray(body)) throw new Error("not an array");
				const problem = body.map(problemOf).find(p => p !== undefined);
				if (problem) throw new Error(problem);
				spans.push(...(body as ZipkinSpan[]));
				res.writeHead(202).end();
			} catch (err) {
				rejected.push((err as Error).message);
				res.writeHead(400).end();
			}
		});
	});
	await new Promise<void>(resolve => server.listen(0, "127.0.0.1", resolve));
	const { port } = server.address() as AddressInfo;
	return {
		url: `http://127.0.0.1:${port}`,
		spans,
		rejected,
		close: () =>
			new Promise<void>(resolve => {
				server.closeAllConnections();
				server.close(() => resolve());
			})
	};
}
