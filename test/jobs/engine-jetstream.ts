/** The JetStream side of a test file's jobs.work channel: looked at, and removed from the shared NATS afterwards. */
import { connect, type JetStreamManager } from "nats";
import { TEST_NATS_URL } from "../helpers/infra";

/** The stream of a namespace's jobs.work channel (the channel adapter names it after the subject). */
export const jobsStream = (namespace: string) => `${namespace}_jobs_work`;

export async function withJetStream<T>(use: (jsm: JetStreamManager) => Promise<T>): Promise<T> {
	const nc = await connect({ servers: new URL(TEST_NATS_URL).host });
	try {
		return await use(await nc.jetstreamManager());
	} finally {
		await nc.close();
	}
}

/** The shared NATS keeps streams: a test file's go when it ends. */
export async function deleteJobStreams(namespace: string): Promise<void> {
	await withJetStream(async jsm => {
		for (const name of [jobsStream(namespace), `${namespace}_jobs_dead-letter`]) {
			// Absent when no jobs node got as far as subscribing.
			await jsm.streams.delete(name).catch((err: unknown) => (String(err).includes("not found") ? false : Promise.reject(err)));
		}
	});
}
