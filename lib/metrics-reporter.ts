/**
 * Moleculer's Prometheus reporter, with these changes:
 * - before each scrape it waits (briefly) for the node's scrape refreshes (lib/metrics.ts
 *   `onScrapeRefresh`, e.g. the jobs queue depth read from the database), then runs its scrape
 *   collectors (`onScrape`) and reads the process's CPU time, so gauges of live state cost
 *   nothing between scrapes;
 * - histograms are printed as Prometheus histograms: `_bucket`, `_sum` and `_count`. The built-in
 *   one prints `_sum`/`_count` only beside its own quantile series (which are not part of the
 *   histogram type), so `rate(x_sum)/rate(x_count)` had nothing to read. They are read from the
 *   histogram's items, not its snapshot: a snapshot also sorts the last minute's samples of every
 *   action for quantiles nobody prints (milliseconds per scrape under load).
 * - a scrape is cheap enough for a short interval: each series' label string is built once (a
 *   series' labels never change) and the answer is gzipped at level 1 (a few times faster than the
 *   default level, for a slightly bigger answer); label values escape newlines too, as the text
 *   format asks.
 * The listener itself (host, port, path) is the built-in one.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import zlib from "node:zlib";
import moleculer, { type ServiceBroker } from "moleculer";
import { BatchedHistogram, METRICS, runScrapeCollectors, runScrapeRefreshes } from "./metrics";

const { Prometheus } = moleculer.MetricReporters;

interface Snapshot {
	labels: Record<string, unknown>;
	value?: unknown;
	rate?: number;
}

interface HistogramItem {
	labels: Record<string, unknown>;
	count: number;
	sum: number;
	bucketValues?: Record<number, number>;
}

interface StoredMetric {
	name: string;
	type: string;
	description?: string;
	unit?: string;
	snapshot(): Snapshot[];
	/** Histograms: the upper bounds, and the items by label hash. */
	buckets?: number[];
	values: Map<string, HistogramItem>;
}

/**
 * Series that identify the process or machine and leak paths or arguments (`process.argv`, the
 * home directory, network addresses, user names). Moleculer's metric names, before formatting.
 */
export const LEAKY_METRICS = ["process.arguments", "process.pid", "process.ppid", "os.user.*", "os.network.*", "os.hostname", "os.datetime.*"];

export class ChatmeshPrometheusReporter extends Prometheus {
	constructor(opts: ConstructorParameters<typeof Prometheus>[0]) {
		super(opts);
		// The built-in one drops the host with port 0 (any free port); Node binds a given host with it too.
		if (opts?.host) this.opts.host = opts.host;
	}

	/** `name="value",…` of each label set seen (default labels first, no braces): built once per series. */
	private readonly labelBodies = new WeakMap<object, string>();
	private readonly metricNames = new WeakMap<object, string>();
	private defaultBody?: string;
	/** Set by the built-in init (the `defaultLabels` option, resolved); its typings omit it. */
	declare defaultLabels?: Record<string, unknown>;

	/** The metrics, once the scrape refreshes are done; gzipped when the scraper accepts it. */
	override handler(req: IncomingMessage, res: ServerResponse): void {
		if (req.url !== this.opts.path) {
			super.handler(req, res);
			return;
		}
		void runScrapeRefreshes(this.registry.broker as ServiceBroker).then(() => {
			let content: string;
			try {
				content = this.generatePrometheusResponse();
			} catch (err) {
				this.logger.error("Unable to generate the Prometheus response", err);
				res.writeHead(500).end();
				return;
			}
			const headers = { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" };
			if (!req.headers["accept-encoding"]?.includes("gzip")) {
				res.writeHead(200, headers).end(content);
				return;
			}
			zlib.gzip(content, { level: 1 }, (err, body) => {
				if (err) {
					this.logger.error("Unable to compress the Prometheus response", err);
					res.writeHead(500).end();
				} else res.writeHead(200, { ...headers, "Content-Encoding": "gzip" }).end(body);
			});
		});
	}

	override generatePrometheusResponse(): string {
		const broker = this.registry.broker as ServiceBroker;
		runScrapeCollectors(broker);
		const cpu = process.cpuUsage();
		if (this.registry.hasMetric(METRICS.processCpu.name)) this.registry.set(METRICS.processCpu.name, (cpu.user + cpu.system) / 1e6);

		const lines: string[] = [];
		for (const metric of (this.registry as unknown as { store: Map<string, StoredMetric> }).store.values()) {
			if (!this.matchMetricName(metric.name)) continue;
			if (metric.type === "histogram") {
				// Printed from its items (not a snapshot), so a batched one is written to them first.
				if (metric instanceof BatchedHistogram) metric.flush();
				if (metric.values.size > 0) this.printHistogram(metric, lines);
				continue;
			}
			const snapshot = metric.snapshot();
			if (snapshot.length === 0) continue;
			const name = this.nameOf(metric);
			lines.push(`# HELP ${name} ${helpOf(metric)}`, `# TYPE ${name} ${metric.type === "info" ? "gauge" : metric.type}`);
			for (const item of snapshot) {
				if (metric.type === "info") {
					lines.push(`${name}${this.labelsToStr(item.labels, { value: item.value })} 1`);
					continue;
				}
				const labels = this.braced(this.labelBody(item.labels));
				lines.push(`${name}${labels} ${num(item.value)}`);
				if (item.rate) lines.push(`${name}_rate${labels} ${num(item.rate)}`);
			}
			lines.push("");
		}
		return lines.join("\n");
	}

	private printHistogram(metric: StoredMetric, lines: string[]): void {
		const name = this.nameOf(metric);
		lines.push(`# HELP ${name} ${helpOf(metric)}`, `# TYPE ${name} histogram`);
		for (const item of metric.values.values()) {
			const body = this.labelBody(item.labels);
			const bucket = `${name}_bucket{${body}${body ? "," : ""}le="`;
			for (const le of metric.buckets ?? []) lines.push(`${bucket}${le}"} ${num(item.bucketValues?.[le])}`);
			lines.push(`${bucket}+Inf"} ${num(item.count)}`);
			const labels = this.braced(body);
			lines.push(`${name}_sum${labels} ${num(item.sum)}`, `${name}_count${labels} ${num(item.count)}`);
		}
		lines.push("");
	}

	private nameOf(metric: StoredMetric): string {
		let name = this.metricNames.get(metric);
		if (name === undefined) {
			name = this.formatMetricName(metric.name).replace(/[.-]/g, "_");
			this.metricNames.set(metric, name);
		}
		return name;
	}

	/** The default labels and then the series' own (which win on a clash, as in the built-in reporter). */
	private labelBody(labels: Record<string, unknown> | undefined): string {
		if (!labels) {
			this.defaultBody ??= this.formatLabels({ ...this.defaultLabels });
			return this.defaultBody;
		}
		let body = this.labelBodies.get(labels);
		if (body === undefined) {
			body = this.formatLabels({ ...this.defaultLabels, ...labels });
			this.labelBodies.set(labels, body);
		}
		return body;
	}

	private formatLabels(labels: Record<string, unknown>): string {
		return Object.entries(labels)
			.map(([key, value]) => `${this.formatLabelName(key)}="${escapeLabelValue(value)}"`)
			.join(",");
	}

	private braced(body: string): string {
		return body ? `{${body}}` : "";
	}
}

/** A label value in the text format: backslash, double quote and newline escaped. */
const escapeLabelValue = (value: unknown) => String(value).replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");

const num = (value: unknown) => (value == null ? "NaN" : String(value));
const helpOf = (metric: StoredMetric) => metric.description ?? metric.name + (metric.unit ? ` (${metric.unit})` : "");
