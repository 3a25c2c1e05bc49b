import { ServiceBroker } from "moleculer";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../lib/config";
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
