import { MetricTypes, ServiceBroker } from "moleculer";
import { afterAll, describe, expect, it } from "vitest";
import {
	BatchedCounter,
	BatchedHistogram,
	observe,
	GAP_BUCKETS,
	GapRecorder,
	increment,
	MAX_MODEL_LABELS,
	METRICS,
	modelLabel,
	recordChatRequest,
	registerChatmeshMetrics,
	setTotal
} from "../../lib/metrics";
import { ChatmeshPrometheusReporter, LEAKY_METRICS } from "../../lib/metrics-reporter";
import { type DepthRow, depthSeries, JobsMetrics } from "../../services/jobs/metrics";

// The metric helpers on a real registry, and the reporter's text as Prometheus reads it.
const reporter = new ChatmeshPrometheusReporter({ port: 0, host: "127.0.0.1", excludes: LEAKY_METRICS });
const broker = new ServiceBroker({
	logger: false,
	nodeID: "metrics-unit",
	metrics: { enabled: true, collectProcessMetrics: true, reporter: [reporter as unknown as { type: "Prometheus" }] }
});
registerChatmeshMetrics(broker);

afterAll(() => broker.stop());

interface Item {
	count: number;
	sum: number;
	bucketValues: Record<number, number>;
}
const itemOf = (name: string, labels: Record<string, string>) =>
	(broker.metrics.getMetric(name) as unknown as { get(l: Record<string, string>): Item | undefined }).get(labels);

describe("chatmesh metrics", () => {
	it("GapRecorder adds an answer's gaps to the histogram as if each were observed", () => {
		const gaps = new GapRecorder();
		// Chunks at 0, 0.3, 2.3, 2.8 and 402.8 ms: gaps of 0.3 ms, 2 ms, 0.5 ms and 400 ms.
		for (const at of [100, 100.3, 102.3, 102.8, 502.8]) gaps.chunk(at);
		gaps.flush(broker, "gap-model");
		const item = itemOf(METRICS.interTokenGap.name, { model: "gap-model" }) as Item;
		expect(item.count).toBe(4);
		expect(item.sum).toBeCloseTo(0.0003 + 0.002 + 0.0005 + 0.4, 6);
		const expected = (bound: number) => [0.0003, 0.002, 0.0005, 0.4].filter(g => g <= bound + 1e-12).length;
		for (const bound of GAP_BUCKETS) expect(item.bucketValues[bound]).toBe(expected(bound));
		// A second answer adds to the same series.
		const more = new GapRecorder();
		more.chunk(0);
		more.chunk(1);
		more.flush(broker, "gap-model");
		expect((itemOf(METRICS.interTokenGap.name, { model: "gap-model" }) as Item).count).toBe(5);
	});

	it("counters add up beside the registry and show the same series as Moleculer's counter as soon as they are read", () => {
		const fresh = new ServiceBroker({ logger: false, metrics: { enabled: true, reporter: [] } });
		registerChatmeshMetrics(fresh);
		const counter = fresh.metrics.getMetric(METRICS.moderationVerdicts.name) as unknown as BatchedCounter & { values: Map<string, unknown> };
		expect(counter).toBeInstanceOf(BatchedCounter);
		const plain = new MetricTypes.Counter(
			{ name: "plain", type: "counter", labelNames: [...METRICS.moderationVerdicts.labelNames] } as never,
			fresh.metrics as never
		);
		const writes: Array<[Record<string, string>, number | undefined]> = [
			[{ check: "profanity", verdict: "allow", direction: "input" }, undefined],
			// The same series with its labels in another order, and a value.
			[{ direction: "input", verdict: "allow", check: "profanity" }, 2],
			[{ check: "injection", verdict: "block", direction: "input" }, undefined],
			[{ check: "profanity", verdict: "allow", direction: "output" }, 5]
		];
		for (const [labels, value] of writes) {
			increment(fresh, "moderationVerdicts", labels, value);
			plain.increment(labels, value);
		}
		// Nothing in the registry's series yet: a plain counter has written four times.
		expect(counter.values.size).toBe(0);
		const series = (snapshot: Array<{ labels: Record<string, unknown>; value: number }>) => snapshot.map(i => `${JSON.stringify(i.labels)}=${i.value}`).sort();
		expect(series(counter.snapshot() as never)).toEqual(series(plain.snapshot() as never));
		expect(counter.values.size).toBe(3);
		expect(counter.get({ check: "profanity", verdict: "allow", direction: "input" })?.value).toBe(3);
		// More after a read, then a read through get: added to what was written.
		increment(fresh, "moderationVerdicts", { check: "injection", verdict: "block", direction: "input" });
		expect(counter.get({ check: "injection", verdict: "block", direction: "input" })?.value).toBe(2);
		// A total kept elsewhere is set as it is, over what was counted before it.
		const total = fresh.metrics.getMetric(METRICS.processCpu.name) as unknown as BatchedCounter;
		increment(fresh, "processCpu", undefined, 3);
		setTotal(fresh, "processCpu", 7);
		expect(total.get()?.value).toBe(7);
		// With the registry switched off nothing is counted.
		fresh.metrics.opts.enabled = false;
		increment(fresh, "moderationVerdicts", { check: "injection", verdict: "block", direction: "input" });
		fresh.metrics.opts.enabled = true;
		expect(counter.get({ check: "injection", verdict: "block", direction: "input" })?.value).toBe(2);
	});

	it("histograms count beside the registry and show the same series as Moleculer's histogram when read, and when scraped", async () => {
		const fresh = new ServiceBroker({ logger: false, metrics: { enabled: true, reporter: [] } });
		registerChatmeshMetrics(fresh);
		const ttft = fresh.metrics.getMetric(METRICS.timeToFirstToken.name) as unknown as BatchedHistogram & { values: Map<string, unknown> };
		expect(ttft).toBeInstanceOf(BatchedHistogram);
		const plain = new MetricTypes.Histogram(
			{
				name: "plain",
				type: "histogram",
				labelNames: [...METRICS.timeToFirstToken.labelNames],
				buckets: [...(METRICS.timeToFirstToken.buckets ?? [])]
			} as never,
			fresh.metrics as never
		);
		const seen: Array<[number, string]> = [
			[0.004, "a"],
			[0.2, "a"],
			[0.05, "b"],
			[200, "a"],
			[0.05, "a"]
		];
		for (const [seconds, model] of seen) {
			observe(fresh, "timeToFirstToken", seconds, { model });
			plain.observe(seconds, { model });
		}
		// A GapRecorder's answer merges into the same pending counts.
		expect(ttft.values.size).toBe(0);
		const items = (h: { snapshot(): unknown }) =>
			(h.snapshot() as Array<{ labels: unknown; count: number; sum: number; buckets: unknown }>)
				.map(i => JSON.stringify([i.labels, i.count, i.sum, i.buckets]))
				.sort();
		expect(items(ttft)).toEqual(items(plain as never));
		expect((ttft.get({ model: "a" }) as unknown as { count: number }).count).toBe(4);
		// The reporter writes what is pending before it prints.
		observe(fresh, "timeToFirstToken", 0.3, { model: "c" });
		const text = new ChatmeshPrometheusReporter({ port: 0, host: "127.0.0.1", excludes: LEAKY_METRICS });
		text.init(fresh.metrics as never);
		expect(text.generatePrometheusResponse()).toMatch(/^chatmesh_llm_time_to_first_token_seconds_count\{[^}]*model="c"[^}]*\} 1$/m);
		await text.stop();
	});

	it("model labels are bounded: the first MAX_MODEL_LABELS names, then other", () => {
		const fresh = new ServiceBroker({ logger: false, metrics: true });
		const labels = Array.from({ length: MAX_MODEL_LABELS + 5 }, (_, i) => modelLabel(fresh, `model-${i}`));
		expect(new Set(labels).size).toBe(MAX_MODEL_LABELS + 1);
		expect(labels.at(-1)).toBe("other");
		expect(modelLabel(fresh, "model-0")).toBe("model-0");
		expect(modelLabel(fresh, null)).toBe("unknown");
	});

	it("helpers do nothing on a broker whose metrics are off or not registered", () => {
		const off = new ServiceBroker({ logger: false, metrics: false });
		expect(() => recordChatRequest(off, "completed", "m", "p", 1)).not.toThrow();
		const bare = new ServiceBroker({ logger: false, metrics: true });
		expect(() => recordChatRequest(bare, "failed", "m", "p", 1)).not.toThrow();
		expect(bare.metrics.hasMetric(METRICS.llmRequests.name)).toBe(false);
	});

	it("the reporter prints the seed's names as they are, histograms with _bucket, _sum and _count, and no leaky series", () => {
		recordChatRequest(broker, "completed", "sim-small", "sim", 0.42);
		recordChatRequest(broker, "blocked", "sim-small", "sim", 1.5);
		const text = reporter.generatePrometheusResponse();
		expect(text).toMatch(/^# TYPE llm_requests_total counter$/m);
		expect(text).toMatch(/^llm_requests_total\{[^}]*model="sim-small",status="completed",provider="sim"\} 1$/m);
		expect(text).toMatch(/^# TYPE llm_latency_seconds histogram$/m);
		expect(text).toMatch(/^llm_latency_seconds_bucket\{[^}]*model="sim-small",provider="sim",le="0\.5"\} 1$/m);
		expect(text).toMatch(/^llm_latency_seconds_bucket\{[^}]*le="\+Inf"\} 2$/m);
		expect(text).toMatch(/^llm_latency_seconds_sum\{[^}]*\} 1\.92$/m);
		expect(text).toMatch(/^llm_latency_seconds_count\{[^}]*\} 2$/m);
		// No extra `_rate` series beside ours, and no quantile series in a histogram family.
		expect(text).not.toMatch(/^llm_requests_total_rate/m);
		expect(text).not.toMatch(/quantile="/);
		expect(text).toMatch(/^process_memory_rss\{/m);
		for (const leaky of ["process_arguments", "process_pid", "os_user_homedir", "os_user_username", "os_network_address", "os_hostname"])
			expect(text).not.toMatch(new RegExp(`^${leaky}[{ ]`, "m"));
	});

	it("the reporter escapes backslashes, quotes and newlines in label values, each series' labels as they were when it was created", () => {
		broker.metrics.register({ name: "test.escaped.total", type: "counter", labelNames: ["tool"] });
		broker.metrics.increment("test.escaped.total", { tool: 'a\\b"c\nd' }, 2);
		broker.metrics.increment("test.escaped.total", { tool: "plain" });
		const text = reporter.generatePrometheusResponse();
		expect(text).toContain('test_escaped_total{namespace="",nodeID="metrics-unit",tool="a\\\\b\\"c\\nd"} 2');
		expect(text).toContain('test_escaped_total{namespace="",nodeID="metrics-unit",tool="plain"} 1');
		// One line per series: the newline did not break the text format.
		expect(text.split("\n").filter(line => line.startsWith("test_escaped_total{"))).toHaveLength(2);
		// A second scrape prints the same label strings with the new values.
		broker.metrics.increment("test.escaped.total", { tool: "plain" });
		expect(reporter.generatePrometheusResponse()).toContain('test_escaped_total{namespace="",nodeID="metrics-unit",tool="plain"} 2');
	});

	it("jobs depth series: every registered kind and depth state (0 when none); unknown kinds are other, other states dropped", () => {
		const series = depthSeries(
			[
				{ kind: "report", state: "queued", count: 3 },
				{ kind: "export", state: "dead", count: 1 },
				{ kind: "gone-kind", state: "queued", count: 2 },
				{ kind: "user-1234", state: "running", count: 1 },
				{ kind: "report", state: "succeeded", count: 50 }
			],
			["report", "export"]
		);
		expect(Object.fromEntries([...series].map(([k, v]) => [k.replace("\u0000", "/"), v]))).toEqual({
			"report/queued": 3,
			"report/running": 0,
			"report/dead": 0,
			"export/queued": 0,
			"export/running": 0,
			"export/dead": 1,
			"other/queued": 2,
			"other/running": 1
		});
	});

	it("the jobs depth gauge is read once per cache period however many scrapes come, and keeps its values when a read fails", async () => {
		let clock = 0;
		let reads = 0;
		let rows: DepthRow[] | Error = [{ kind: "report", state: "queued", count: 4 }];
		const jobs = new JobsMetrics(
			broker,
			["report", "export"],
			async () => {
				reads++;
				await new Promise(resolve => setTimeout(resolve, 20));
				if (rows instanceof Error) throw rows;
				return rows;
			},
			{ cacheMs: 5000, now: () => clock }
		);
		jobs.start(["quota-reset"]);
		try {
			const { port } = (reporter as unknown as { server: import("node:net").Server }).server.address() as import("node:net").AddressInfo;
			const scrape = async () => {
				const res = await fetch(`http://127.0.0.1:${port}/metrics`);
				expect(res.status).toBe(200);
				return res.text();
			};
			const depth = (text: string, kind: string, state: string) =>
				Number(text.match(new RegExp(`^chatmesh_jobs_depth\\{[^}]*kind="${kind}",state="${state}"\\} (\\d+)$`, "m"))?.[1]);
			// Three scrapes at once share one read, and the first scrape already shows its result.
			const texts = await Promise.all([scrape(), scrape(), scrape()]);
			expect(reads).toBe(1);
			for (const text of texts) {
				expect(depth(text, "report", "queued")).toBe(4);
				expect(depth(text, "export", "dead")).toBe(0);
			}
			rows = [{ kind: "report", state: "queued", count: 1 }];
			clock = 4000;
			expect(depth(await scrape(), "report", "queued")).toBe(4);
			expect(reads).toBe(1);
			// The period over: a read fails; the scrape still answers, with the last values and the failure counted.
			clock = 6000;
			rows = new Error("database away");
			const failed = await scrape();
			expect(reads).toBe(2);
			expect(depth(failed, "report", "queued")).toBe(4);
			expect(failed).toMatch(/^chatmesh_jobs_depth_read_failures_total\{[^}]*\} 1$/m);
			// A failed read is not cached: the next scrape reads again.
			rows = [{ kind: "report", state: "queued", count: 1 }];
			expect(depth(await scrape(), "report", "queued")).toBe(1);
			expect(reads).toBe(3);
		} finally {
			jobs.stop();
		}
	});

	it("jobs counters start at 0 for every kind and schedule, and take no label value outside them", () => {
		const fresh = new ServiceBroker({ logger: false, metrics: true });
		registerChatmeshMetrics(fresh);
		const jobs = new JobsMetrics(fresh, ["report"], async () => []);
		jobs.start(["quota-reset"]);
		jobs.finished("report", "succeeded");
		jobs.finished("9f1c0e1e-job-id", "dead");
		jobs.retried("report");
		jobs.stepRecorded("who-knows");
		jobs.scheduleRan("quota-reset", "succeeded");
		jobs.scheduleRan("../etc", "failed");
		jobs.stop();
		const values = (name: string) =>
			Object.fromEntries(
				(fresh.metrics.getMetric(name) as unknown as { snapshot(): { labels: Record<string, string>; value: number }[] })
					.snapshot()
					.map(s => [Object.values(s.labels).join("/"), s.value])
			);
		expect(values(METRICS.jobsFinished.name)).toEqual({
			"report/succeeded": 1,
			"report/failed": 0,
			"report/cancelled": 0,
			"report/dead": 0,
			"other/dead": 1
		});
		expect(values(METRICS.jobsRetries.name)).toEqual({ report: 1 });
		expect(values(METRICS.jobsSteps.name)).toEqual({ report: 0, other: 1 });
		expect(values(METRICS.jobsScheduleRuns.name)).toEqual({
			"quota-reset/succeeded": 1,
			"quota-reset/failed": 0,
			"quota-reset/skipped": 0,
			"other/failed": 1
		});
	});
});
