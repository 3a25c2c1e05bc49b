import { ServiceBroker } from "moleculer";
import { afterAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../lib/config";
import { jobsChannelMiddleware } from "../../services/jobs/channel";
import { TEST_JWT_SECRET, TEST_NATS_URL, uniqueNamespace } from "../helpers/infra";
import { waitFor } from "../helpers/wait";
import { deleteJobStreams } from "./engine-jetstream";

// Jobs nodes of a cluster often start together (docker-compose starts both workers at once): each
// one creates the namespace's durable consumer when it finds none, and all of them must start.
const namespace = uniqueNamespace("jobs-channel");
const brokers: ServiceBroker[] = [];

afterAll(async () => {
	await Promise.all(brokers.map(b => b.stop()));
	await deleteJobStreams(namespace);
});

function worker(nodeID: string, received: string[]): ServiceBroker {
	const config = loadConfig({
		NODE_ENV: "test",
		LOG_LEVEL: "error",
		NAMESPACE: namespace,
		TRANSPORTER: TEST_NATS_URL,
		SERVICES: "jobs",
		DATABASE_URL: "postgres://unused@127.0.0.1:1/unused",
		JWT_SECRET: TEST_JWT_SECRET
	});
	const broker = new ServiceBroker({ nodeID, namespace, logger: false, middlewares: [jobsChannelMiddleware(config)] });
	broker.createService({
		name: "jobs",
		channels: {
			"jobs.work": {
				handler(payload: unknown) {
					received.push(`${nodeID}:${(payload as { n: number }).n}`);
				}
			}
		}
	});
	brokers.push(broker);
	return broker;
}

describe("the jobs.work channel on NATS JetStream", () => {
	it("starts every jobs node that subscribes at the same moment, and each message reaches one of them", async () => {
		const received: string[] = [];
		const nodes = Array.from({ length: 8 }, (_, i) => worker(`w${i + 1}`, received));
		const started = await Promise.allSettled(nodes.map(b => b.start()));
		expect(started.filter(s => s.status === "rejected")).toEqual([]);

		const send = nodes[0] as unknown as { sendToChannel(name: string, payload: unknown): Promise<void> };
		for (let n = 0; n < 8; n++) await send.sendToChannel("jobs.work", { n });
		await waitFor(() => received.length >= 8, { timeoutMs: 10_000 });
		// One consumer group: every message once, whichever node took it.
		expect(received.map(r => Number(r.split(":")[1])).sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
	}, 30_000);
});
