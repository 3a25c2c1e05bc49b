/**
 * Moleculer's tracer, configured from TRACING_*: a span per action call on every node, all the
 * spans of one request under one trace (Moleculer uses the request id as the trace id and passes
 * it, the parent span and the sampling decision along with each call across NATS).
 *
 * The `zipkin` exporter is Moleculer's, with what a real collector needs fixed: ids in Zipkin's
 * hex form (a client's X-Request-Id is hashed; see traceIdOf), no null fields, no fake remote
 * endpoint, the queue flushed when the node stops, and an unreachable collector reported once per
 * outage rather than at every flush. Spans carry no action params, meta or response (message
 * texts, passwords and tokens stay out of the trace store); errors keep only name, message, code
 * and type.
 */
import moleculer, { type ServiceBroker, type Span, type TracerOptions } from "moleculer";
import type { TracingConfig } from "./config";
import { spanIdOf, traceIdOf } from "./request-context";

/** Seconds between two posts of the finished spans. */
const FLUSH_INTERVAL_S = 2;
/** How long a stopping node waits for its last post. */
const STOP_FLUSH_TIMEOUT_MS = 3000;

type ZipkinPayload = Record<string, unknown> & { parentId?: string | null; remoteEndpoint?: unknown };

interface ZipkinExporterBase {
	opts: { baseURL: string; headers: Record<string, string> };
	queue: Span[];
	timer: NodeJS.Timeout | null;
	logger: ServiceBroker["logger"];
	init(tracer: unknown): void;
	makePayload(span: Span): ZipkinPayload;
}

const ZipkinBase = (moleculer.TracerExporters as unknown as { Zipkin: new (opts: object) => ZipkinExporterBase }).Zipkin;

export class ZipkinExporter extends ZipkinBase {
	private failing = false;

	constructor(endpoint: string) {
		super({ baseURL: endpoint, interval: FLUSH_INTERVAL_S });
	}

	convertID(id: string | null | undefined): string | null {
		return id ? spanIdOf(id) : null;
	}

	override makePayload(span: Span): ZipkinPayload {
		const payload = super.makePayload(span);
		payload.traceId = traceIdOf(span.traceID);
		if (!payload.parentId) delete payload.parentId;
		// Moleculer fills the remote endpoint with the span's own service; it is not known here.
		delete payload.remoteEndpoint;
		return payload;
	}

	flush(): Promise<void> {
		if (this.queue.length === 0) return Promise.resolve();
		const spans = this.queue.map(span => this.makePayload(span));
		this.queue.length = 0;
		return fetch(`${this.opts.baseURL}/api/v2/spans`, {
			method: "POST",
			body: JSON.stringify(spans),
			headers: this.opts.headers,
			signal: AbortSignal.timeout(10_000)
		})
			.then(async res => {
				await res.body?.cancel();
				if (res.status >= 400) throw new Error(`status ${res.status}`);
				if (this.failing) this.logger.info("Tracing collector reachable again");
				this.failing = false;
			})
			.catch((err: unknown) => {
				// Spans of an unreachable collector are dropped: tracing never holds up or fills a node.
				if (!this.failing) this.logger.warn("Tracing spans could not be sent; dropping them until the collector answers", { cause: (err as Error).message });
				this.failing = true;
			});
	}

	async stop(): Promise<void> {
		if (this.timer) clearInterval(this.timer);
		this.timer = null;
		let timeout: NodeJS.Timeout | undefined;
		await Promise.race([this.flush(), new Promise(resolve => (timeout = setTimeout(resolve, STOP_FLUSH_TIMEOUT_MS)))]);
		clearTimeout(timeout);
	}
}

/** The broker's `tracing` option. Off (no tracer work at all) unless an exporter is configured. */
export function tracingOptions(tracing: TracingConfig | undefined): TracerOptions {
	if (!tracing) return { enabled: false };
	return {
		enabled: true,
		exporter: tracing.exporter === "zipkin" ? (new ZipkinExporter(tracing.endpoint) as unknown as TracerOptions["exporter"]) : { type: "Console" },
		sampling: { rate: tracing.sampleRate },
		actions: true,
		events: false,
		errorFields: ["name", "message", "code", "type"],
		stackTrace: false,
		tags: { action: { params: false, meta: false, response: false } }
	};
}
