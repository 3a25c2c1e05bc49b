import { METRIC, ServiceBroker } from "moleculer";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../lib/config";
import { PacketBatchedMetrics } from "../../middlewares/metrics.middleware";
import { brokerOptions } from "../../moleculer.config";

// chatmesh lists Moleculer's internal middlewares itself (to put its packet-batched metrics in the
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
