import { METRIC, ServiceBroker } from "moleculer";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../lib/config";
import { PacketBatchedMetrics } from "../../middlewares/metrics.middleware";
import { brokerOptions } from "../../moleculer.config";

// chatmesh lists Moleculer's internal middlewares itself (to put its packet-batched metrics in the
// place of "Metrics"): the list must stay Moleculer's own, in its order, whatever the version.
const names = (broker: ServiceBroker) => (broker.middlewares as unknown as { list: Array<{ name?: string }> }).list.map(m => m.name);

describe("broker middlewares", () => {
	it("are Moleculer's internal ones in Moleculer's order, after chatmesh's Auth", () => {
		const moleculerDefault = new ServiceBroker({ logger: false, cacher: "Memory", metrics: { enabled: true } });
		const config = loadConfig({ NODE_ENV: "test", LOG_LEVEL: "error" });
		const chatmesh = new ServiceBroker({ ...brokerOptions(config), logger: false, metrics: { enabled: true } });
		expect(names(chatmesh)).toEqual(["Auth", ...names(moleculerDefault)]);
	});
});

describe("packet-batched metrics", () => {
	it("count packets without touching the registry per packet, and write the counts at the flush", async () => {
		const broker = new ServiceBroker({ logger: false, metrics: { enabled: true } });
		type Hook = (next: (...args: unknown[]) => unknown) => (...args: unknown[]) => unknown;
		const mw = PacketBatchedMetrics(60_000)(broker) as unknown as {
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
