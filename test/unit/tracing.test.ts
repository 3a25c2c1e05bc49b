import { ServiceBroker } from "moleculer";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../lib/config";
import { traceIdOf } from "../../lib/request-context";
import { tracingOptions } from "../../lib/tracing";
import { startZipkinReceiver } from "../helpers/zipkin";

describe("tracing configuration", () => {
	it("is off with nothing set, as on the embedded node", () => {
		expect(loadConfig({}).tracing).toBeUndefined();
		expect(tracingOptions(loadConfig({}).tracing)).toEqual({ enabled: false });
		expect(loadConfig({ TRACING_EXPORTER: "none", TRACING_SAMPLE_RATE: "0.5" }).tracing).toBeUndefined();
	});

	it("names the exporter, the collector and the sample rate", () => {
		expect(loadConfig({ TRACING_EXPORTER: "zipkin", TRACING_ENDPOINT: "http://zipkin:9411/", TRACING_SAMPLE_RATE: "0.25" }).tracing).toEqual({
			exporter: "zipkin",
			endpoint: "http://zipkin:9411",
			sampleRate: 0.25
		});
		expect(loadConfig({ TRACING_EXPORTER: "console" }).tracing).toEqual({ exporter: "console", endpoint: "http://127.0.0.1:9411", sampleRate: 1 });
	});

	it("refuses what it cannot use, naming the variable", () => {
		for (const [name, value] of [
			["TRACING_EXPORTER", "jaegerr"],
			["TRACING_ENDPOINT", "udp://127.0.0.1:6832"],
			["TRACING_SAMPLE_RATE", "1.5"],
			["TRACING_SAMPLE_RATE", "-0.1"],
			["TRACING_SAMPLE_RATE", "half"]
		])
			expect(() => loadConfig({ TRACING_EXPORTER: "zipkin", [name]: value }), `${name}=${value}`).toThrow(new RegExp(`^${name} must be`));
		expect(() => loadConfig({ TRACING_SAMPLE_RATE: "2" })).toThrow(ConfigError);
	});
});

describe("the Zipkin exporter", () => {
	it("sends the spans still queued when the node stops, in a form Zipkin accepts, with no params", async () => {
		const zipkin = await startZipkinReceiver();
		const tracing = tracingOptions({ exporter: "zipkin", endpoint: zipkin.url, sampleRate: 1 });
		const broker = new ServiceBroker({ logger: false, tracing });
		broker.createService({
			name: "echo",
			actions: {
				outer: { handler: ctx => ctx.call("echo.inner", { secret: "do not trace me" }) },
				inner: { handler: () => "ok" }
			}
		});
		try {
			await broker.start();
			await broker.call("echo.outer", { password: "nor me" }, { requestID: "unit-trace-1" });
			// The exporter posts every 2 s; stopping the broker must not lose what is queued.
			await broker.stop();
			expect(zipkin.rejected).toEqual([]);
			const spans = zipkin.spans.filter(s => s.tags.requestID === "unit-trace-1");
			expect(spans.map(s => s.tags["action.name"]).sort()).toEqual(["echo.inner", "echo.outer"]);
			expect(new Set(spans.map(s => s.traceId))).toEqual(new Set([traceIdOf("unit-trace-1")]));
			const outer = spans.find(s => s.tags["action.name"] === "echo.outer");
			expect(outer?.parentId).toBeUndefined();
			expect(spans.find(s => s.tags["action.name"] === "echo.inner")?.parentId).toBe(outer?.id);
			expect(JSON.stringify(spans)).not.toMatch(/do not trace me|nor me/);
		} finally {
			await zipkin.close();
		}
	});
});
