/**
 * Moleculer's Prometheus reporter, with two changes:
 * - before each scrape it waits (briefly) for the node's scrape refreshes (lib/metrics.ts
 *   `onScrapeRefresh`, e.g. the jobs queue depth read from the database), then runs its scrape
 *   collectors (`onScrape`) and reads the process's CPU time, so gauges of live state cost
 *   nothing between scrapes;
 * - histograms are printed as Prometheus histograms: `_bucket`, `_sum` and `_count`. The built-in
 *   one prints `_sum`/`_count` only beside its own quantile series (which are not part of the
 *   histogram type), so `rate(x_sum)/rate(x_count)` had nothing to read. They are read from the
 *   histogram's items, not its snapshot: a snapshot also sorts the last minute's samples of every
 *   action for quantiles nobody prints (milliseconds per scrape under load).
 * The listener itself (host, port, path, gzip) is the built-in one.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import moleculer, { type ServiceBroker } from "moleculer";
import { METRICS, runScrapeCollectors, runScrapeRefreshes } from "./metrics";

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

	/** The built-in handler (listener, gzip), once the scrape refreshes are done. */
	override handler(req: IncomingMessage, res: ServerResponse): void {
		if (req.url !== this.opts.path) {
			super.handler(req, res);
			return;
		}
		void runScrapeRefreshes(this.registry.broker as ServiceBroker).then(() => super.handler(req, res));
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
				if (metric.values.size > 0) this.printHistogram(metric, lines);
				continue;
			}
			const snapshot = metric.snapshot();
			if (snapshot.length === 0) continue;
			const name = this.formatMetricName(metric.name).replace(/[.-]/g, "_");
			lines.push(`# HELP ${name} ${helpOf(metric)}`, `# TYPE ${name} ${metric.type === "info" ? "gauge" : metric.type}`);
			for (const item of snapshot) {
				const labels = this.labelsToStr(item.labels);
				if (metric.type === "info") lines.push(`${name}${this.labelsToStr(item.labels, { value: item.value })} 1`);
				else lines.push(`${name}${labels} ${num(item.value)}`);
				if (item.rate) lines.push(`${name}_rate${labels} ${num(item.rate)}`);
			}
			lines.push("");
		}
		return lines.join("\n");
	}

	private printHistogram(metric: StoredMetric, lines: string[]): void {
		const name = this.formatMetricName(metric.name).replace(/[.-]/g, "_");
		lines.push(`# HELP ${name} ${helpOf(metric)}`, `# TYPE ${name} histogram`);
		for (const item of metric.values.values()) {
			for (const le of metric.buckets ?? []) lines.push(`${name}_bucket${this.labelsToStr(item.labels, { le })} ${num(item.bucketValues?.[le])}`);
			const labels = this.labelsToStr(item.labels);
			lines.push(`${name}_bucket${this.labelsToStr(item.labels, { le: "+Inf" })} ${num(item.count)}`);
			lines.push(`${name}_sum${labels} ${num(item.sum)}`, `${name}_count${labels} ${num(item.count)}`);
		}
		lines.push("");
	}
}

const num = (value: unknown) => (value == null ? "NaN" : String(value));
const helpOf = (metric: StoredMetric) => metric.description ?? metric.name + (metric.unit ? ` (${metric.unit})` : "");
