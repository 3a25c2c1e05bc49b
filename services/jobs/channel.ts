/**
 * The transport of the jobs.work channel (@moleculer/channels), by configuration: NATS JetStream
 * in a cluster (a durable consumer group per namespace: a message goes to one jobs node, is
 * acknowledged once the job it led to is recorded, comes back after the ack wait when that node
 * died, and after maxRetries failed handlings goes to the dead-letter subject); the in-process
 * Fake adapter on one node, where the database alone makes jobs survive a restart.
 */
import channels from "@moleculer/channels";
import type { Middleware } from "moleculer";
import type { ChatmeshConfig } from "../../lib/config";

const NANOS_PER_MS = 1_000_000;

type NatsChannel = Parameters<InstanceType<typeof channels.Adapters.NATS>["subscribe"]>[0];

/** Tries at the durable consumer before a node gives up starting. */
const SUBSCRIBE_ATTEMPTS = 5;

/**
 * The NATS adapter, safe for jobs nodes that start together. Each node looks the durable consumer
 * up and creates it when it is missing; two nodes doing so at once both find it missing, and the
 * second creation fails with "consumer name already in use" (each names its own deliver subject),
 * which would stop that node. Once the consumer exists, subscribing again binds to it.
 */
export class JobsNatsAdapter extends channels.Adapters.NATS {
	override async subscribe(chan: NatsChannel): Promise<void> {
		for (let attempt = 1; ; attempt++) {
			try {
				return await super.subscribe(chan);
			} catch (err) {
				if (attempt >= SUBSCRIBE_ATTEMPTS || !/consumer name already in use/i.test((err as Error).message)) throw err;
				// The failed try left its message tracking behind; the next one starts it again.
				this.stopChannelActiveMessages(chan.id);
				await new Promise(resolve => setTimeout(resolve, 50 * attempt + Math.random() * 100));
			}
		}
	}
}

export function jobsChannelMiddleware(config: ChatmeshConfig): Middleware {
	const { concurrency, leaseMs } = config.jobs;
	const common = {
		prefix: config.namespace,
		// Messages only wake workers, who wait for a free slot: allow a few per slot in flight.
		maxInFlight: concurrency * 4,
		maxRetries: 3,
		deadLettering: { enabled: true, queueName: "jobs.dead-letter" }
	};
	const adapter =
		config.transporter.length > 0
			? new JobsNatsAdapter({
					...common,
					nats: {
						url: config.transporter.join(","),
						connectionOptions: { maxReconnectAttempts: -1, reconnectTimeWait: 1000 },
						// Wake-ups are worth nothing after a day; the jobs table keeps the work.
						streamConfig: { max_age: 86_400_000 * NANOS_PER_MS },
						// A message whose worker died comes back about when its lease runs out.
						consumerOptions: { config: { ack_wait: (leaseMs + 1000) * NANOS_PER_MS } }
					}
				})
			: { type: "Fake", options: common };
	// The adapter options' declared type requires fields the adapters default themselves.
	type Options = Parameters<typeof channels.Middleware>[0];
	return channels.Middleware({ adapter, context: false } as unknown as Options) as unknown as Middleware;
}
