import { METRIC, type Middleware, ServiceBroker, Errors } from "moleculer";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../lib/config";
import { runScrapeCollectors } from "../../lib/metrics";
import { BatchedMetrics, INTERNAL_MIDDLEWARES } from "../../middlewares/metrics.middleware";
import { brokerOptions } from "../../moleculer.config";

// chatmesh lists Moleculer's internal middlewares itself (to put its batched metrics in the
// place of "Metrics"): the list must stay Moleculer's own, in its order, whatever the version.
const names = (broker: ServiceBroker) => (broker.middlewares as unknown as { list: Array<{ name?: string }> }).list.map(m => m.name);

describe("broker middlewares", () => {
	it("are Moleculer's internal ones in Moleculer's order, after chatmesh's Auth and before the ones a node's role adds", () => {
		const moleculerDefault = names(new ServiceBroker({ logger: false, cacher: "Memory", metrics: { enabled: true } }));
		const brokerFor = (env: Record<string, string>) =>
			names(new ServiceBroker({ ...brokerOptions(loadConfig({ NODE_ENV: "test", LOG_LEVEL: "error", ...env })), logger: false, metrics: { enabled: true } }));
		// Every service (jobs among them): the jobs.work channel's middleware comes last.
		expect(brokerFor({})).toEqual(["Auth", ...moleculerDefault, "Channels"]);
		// A gateway-only node of a cluster adds nothing after Moleculer's own.
		expect(brokerFor({ SERVICES: "gateway", TRANSPORTER: "nats://127.0.0.1:4222", JWT_SECRET: "x".repeat(40) })).toEqual(["Auth", ...moleculerDefault]);
	});
});

describe("packet-batched metrics", () => {
	it("count packets without touching the registry per packet, and write the counts at the flush", async () => {
		const broker = new ServiceBroker({ logger: false, metrics: { enabled: true } });
		type Hook = (next: (...args: unknown[]) => unknown) => (...args: unknown[]) => unknown;
		const mw = BatchedMetrics(60_000)(broker) as unknown as {
			created(b: ServiceBroker): void;
			stopped(): Promise<void>;
			transporterSend: Hook;
			transitPublish: Hook;
		};
		mw.created(broker);
		const sent: unknown[] = [];
		const send = mw.transporterSend((...args) => sent.push(args));
		const publish = mw.transitPublish(packet => packet);
		const total = () => broker.metrics.getMetric(METRIC.MOLECULER_TRANSPORTER_PACKETS_SENT_TOTAL)?.get()?.value ?? 0;
		const bytes = () => broker.metrics.getMetric(METRIC.MOLECULER_TRANSPORTER_PACKETS_SENT_BYTES)?.get()?.value ?? 0;
		const published = () => broker.metrics.getMetric(METRIC.MOLECULER_TRANSIT_PUBLISH_TOTAL)?.get({ type: "RES" })?.value ?? 0;

		for (let i = 0; i < 3; i++) {
			send("topic", Buffer.alloc(10));
			publish({ type: "RES" });
		}
		expect(sent).toHaveLength(3);
		// Nothing reached the registry yet: the built-in middleware would show 3 here.
		expect([total(), bytes(), published()]).toEqual([0, 0, 0]);
		await mw.stopped();
		expect([total(), bytes(), published()]).toEqual([3, 30, 3]);
	});
});

const { MoleculerClientError } = Errors;

describe("batched action, event and bulkhead metrics", () => {
	type Item = {
		value?: number;
		count?: number;
		sum?: number;
		bucketValues?: Record<number, number>;
		quantileValues?: unknown;
		labels: Record<string, unknown>;
	};
	const items = (broker: ServiceBroker, name: string) =>
		Array.from(((broker.metrics.getMetric(name) as unknown as { values: Map<string, Item> } | null)?.values ?? new Map()).values());
	const item = (broker: ServiceBroker, name: string, labels: Record<string, unknown>) =>
		(broker.metrics.getMetric(name) as unknown as { get(l: Record<string, unknown>): Item | null } | null)?.get(labels) ?? undefined;

	/** A broker with Moleculer's middlewares, or with chatmesh's list where BatchedMetrics replaces "Metrics". */
	function brokerWith(batched: boolean): ServiceBroker {
		return new ServiceBroker({
			logger: false,
			metrics: { enabled: true, reporter: [] },
			cacher: "Memory",
			bulkhead: { enabled: true, concurrency: 2, maxQueueSize: 10 },
			...(batched
				? {
						internalMiddlewares: false,
						middlewares: INTERNAL_MIDDLEWARES.map(name => (name === "Metrics" ? (BatchedMetrics(60_000) as unknown as Middleware) : name))
					}
				: {})
		});
	}

	/** The same calls on either broker: 3 successes, one failure, 3 slow calls (one queued by the bulkhead), a nested call, a cached action read 3 times and an event. */
	async function exercise(broker: ServiceBroker, whileSlow: () => void = () => {}): Promise<void> {
		let release = () => {};
		const gate = new Promise<void>(resolve => {
			release = resolve;
		});
		broker.createService({
			name: "s",
			actions: {
				ok: { params: { n: "number" }, handler: ctx => (ctx.params as { n: number }).n },
				fail: () => Promise.reject(new MoleculerClientError("no", 409, "NOPE")),
				slow: () => gate,
				outer: ctx => ctx.call("s.ok", { n: 1 }),
				cached: { cache: true, handler: () => 42 }
			},
			events: { "thing.happened": () => {} }
		});
		await broker.start();
		for (let n = 0; n < 3; n++) await broker.call("s.ok", { n });
		await expect(broker.call("s.fail")).rejects.toThrow("no");
		await broker.call("s.outer");
		for (let n = 0; n < 3; n++) await broker.call("s.cached");
		const slow = Array.from({ length: 3 }, () => broker.call("s.slow"));
		await new Promise(resolve => setImmediate(resolve));
		whileSlow();
		release();
		await Promise.all(slow);
		await broker.emit("thing.happened", {});
	}

	it("write the same series as Moleculer's own middleware, but only at the flush", async () => {
		const builtIn = brokerWith(false);
		await exercise(builtIn);
		const batched = brokerWith(true);
		const okTotal = (labels: Record<string, unknown>) =>
			item(batched, METRIC.MOLECULER_REQUEST_TOTAL, { service: "s", action: "s.ok", type: "local", ...labels })?.value;
		const slow = { service: "s", action: "s.slow" };
		let beforeScrape: unknown[] = [];
		let duringSlow: Record<string, number | undefined> = {};
		await exercise(batched, () => {
			// Counted locally so far: s.ok's 3 calls and the one from s.outer (caller "s") are not in the registry; the failure was written at once.
			beforeScrape = [
				okTotal({ caller: null }),
				okTotal({ caller: "s" }),
				items(batched, METRIC.MOLECULER_REQUEST_ERROR_TOTAL).map(i => [i.labels.action, i.labels.errorType, i.value])
			];
			runScrapeCollectors(batched);
			duringSlow = {
				ok: okTotal({ caller: null }),
				nested: okTotal({ caller: "s" }),
				inflight: item(batched, METRIC.MOLECULER_REQUEST_BULKHEAD_INFLIGHT, slow)?.value,
				queued: item(batched, METRIC.MOLECULER_REQUEST_BULKHEAD_QUEUE_SIZE, slow)?.value,
				active: item(batched, METRIC.MOLECULER_REQUEST_ACTIVE, { ...slow, type: "local", caller: null })?.value
			};
		});
		expect(beforeScrape).toEqual([undefined, undefined, [["s.fail", "NOPE", 1]]]);
		// A scrape writes what was counted: three slow calls active, two running and one waiting in the bulkhead's queue.
		expect(duringSlow).toEqual({ ok: 3, nested: 1, inflight: 2, queued: 1, active: 3 });
		// The slow calls ended since: the registry still shows them active until the next flush.
		expect(item(batched, METRIC.MOLECULER_REQUEST_ACTIVE, { ...slow, type: "local", caller: null })?.value).toBe(3);
		runScrapeCollectors(batched);

		const counters = [
			METRIC.MOLECULER_REQUEST_TOTAL,
			METRIC.MOLECULER_REQUEST_ACTIVE,
			METRIC.MOLECULER_REQUEST_LEVELS,
			METRIC.MOLECULER_REQUEST_ERROR_TOTAL,
			METRIC.MOLECULER_EVENT_RECEIVED_TOTAL,
			METRIC.MOLECULER_CACHER_GET_TOTAL,
			METRIC.MOLECULER_CACHER_FOUND_TOTAL,
			METRIC.MOLECULER_CACHER_SET_TOTAL
		];
		const gauges = [METRIC.MOLECULER_REQUEST_BULKHEAD_INFLIGHT, METRIC.MOLECULER_REQUEST_BULKHEAD_QUEUE_SIZE];
		const values = (broker: ServiceBroker, name: string) =>
			items(broker, name)
				.map(i => `${JSON.stringify(i.labels)}=${i.value}`)
				.sort();
		for (const name of [...counters, ...gauges]) expect(values(batched, name), name).toEqual(values(builtIn, name));
		expect(values(batched, METRIC.MOLECULER_REQUEST_TOTAL)).toHaveLength(6);
		expect(values(batched, METRIC.MOLECULER_CACHER_FOUND_TOTAL)).toEqual(["{}=2"]);
		// Histograms: the same series with the same counts and no quantile window (the built-in cacher's keeps every read of the last minute).
		for (const name of [METRIC.MOLECULER_CACHER_GET_TIME, METRIC.MOLECULER_CACHER_SET_TIME]) {
			const [builtInItem, batchedItem] = [items(builtIn, name), items(batched, name)];
			expect(
				batchedItem.map(i => i.count),
				name
			).toEqual(builtInItem.map(i => i.count));
			expect(builtInItem[0].quantileValues).toBeDefined();
			expect(batchedItem[0].quantileValues).toBeUndefined();
		}
		// The call histograms also keep every observation within the buckets.
		for (const name of [METRIC.MOLECULER_REQUEST_TIME, METRIC.MOLECULER_EVENT_RECEIVED_TIME]) {
			const counts = (broker: ServiceBroker) =>
				items(broker, name)
					.map(i => `${JSON.stringify(i.labels)}=${i.count}`)
					.sort();
			expect(counts(batched), name).toEqual(counts(builtIn));
			for (const i of items(batched, name)) {
				const buckets: number[] = Object.values(i.bucketValues ?? {});
				expect(buckets.length).toBeGreaterThan(0);
				expect(Math.max(...buckets)).toBeLessThanOrEqual(i.count ?? 0);
				expect(buckets).toEqual([...buckets].sort((a, b) => a - b));
				expect(i.quantileValues).toBeUndefined();
			}
		}
		// Switched off at run time (the registry's own flag), the wrappers count nothing.
		batched.metrics.opts.enabled = false;
		await batched.call("s.ok", { n: 9 });
		batched.metrics.opts.enabled = true;
		runScrapeCollectors(batched);
		expect(okTotal({ caller: null })).toBe(3);
		await Promise.all([builtIn.stop(), batched.stop()]);
	});
});
