import net from "node:net";
import { ServiceBroker } from "moleculer";
import { describe, expect, it } from "vitest";
import { TEST_NATS_URL, uniqueNamespace } from "../helpers/infra";
import { type TestNode, withChatNode } from "../helpers/fixtures";
import { waitUntil } from "../helpers/processes";

// METRICS_PORT turns on Moleculer's Prometheus reporter; a scrape sees the node's requests and,
// batched once a second, the packets it exchanged over NATS with another broker.
const namespace = uniqueNamespace("metrics");
let node: TestNode;
let port: number;

const freePort = () =>
	new Promise<number>(resolve => {
		const server = net.createServer().listen(0, "127.0.0.1", () => {
			const { port: p } = server.address() as net.AddressInfo;
			server.close(() => resolve(p));
		});
	});

withChatNode({
	label: "metrics",
	models: ["sim-small"],
	nats: true,
	env: async () => {
		port = await freePort();
		return { NAMESPACE: namespace, METRICS_PORT: String(port) };
	},
	started: f => {
		node = f.node;
	}
});

describe("Prometheus metrics", () => {
	it("are served on METRICS_PORT and count the node's requests", async () => {
		for (let i = 0; i < 3; i++) expect((await fetch(`${node.baseUrl}/ready`)).status).toBe(200);
		const res = await fetch(`http://127.0.0.1:${port}/metrics`);
		expect(res.status).toBe(200);
		const text = await res.text();
		expect(text).toMatch(/moleculer_request_total\{[^}]*action="gateway\.ready"[^}]*\} [3-9]/);
		expect(text).toMatch(/moleculer_request_total\{[^}]*action="llm\.health"/);
	});

	it("count the packets exchanged with another node, by packet type", async () => {
		const caller = new ServiceBroker({
			namespace,
			nodeID: "metrics-caller",
			transporter: { type: "NATS", options: { servers: TEST_NATS_URL } },
			logger: false
		});
		await caller.start();
		try {
			await caller.waitForServices(["llm"], 10_000);
			for (let i = 0; i < 5; i++) await caller.call("llm.models", {}, { nodeID: node.broker.nodeID });
		} finally {
			await caller.stop();
		}
		const series = (text: string, name: string, type?: string) => {
			const line = text.split("\n").find(l => l.startsWith(`${name}{`) && (type === undefined || l.includes(`type="${type}"`)));
			return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
		};
		let text = "";
		await waitUntil(async () => {
			text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
			return series(text, "moleculer_transit_receive_total", "REQ") >= 5;
		}, 5000);
		expect(series(text, "moleculer_transit_receive_total", "REQ")).toBeGreaterThanOrEqual(5);
		expect(series(text, "moleculer_transit_publish_total", "RES")).toBeGreaterThanOrEqual(5);
		expect(series(text, "moleculer_transporter_packets_received_total")).toBeGreaterThanOrEqual(5);
		expect(series(text, "moleculer_transporter_packets_sent_bytes")).toBeGreaterThan(0);
	});
});
