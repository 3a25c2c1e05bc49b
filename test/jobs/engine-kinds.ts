/**
 * Job kinds for the engine's tests, registered the way kinds outside services/jobs/kinds are
 * (registerJobKind before the node starts): a multi-step workflow whose every step is a model
 * call through the llm service with a prompt of its own, a quick one-step kind, and a kind that
 * always fails with a retryable error, recording when each attempt began.
 */
import { z } from "zod";
import type { ChatResult } from "../../services/llm/llm.service";
import type { JobKind } from "../../services/jobs/kind";
import { UpstreamError, ERR_UPSTREAM_TIMEOUT } from "../../lib/errors";

const sleep = (ms: number, signal?: AbortSignal) =>
	new Promise<void>((resolve, reject) => {
		const timer = setTimeout(resolve, ms);
		signal?.addEventListener("abort", () => {
			clearTimeout(timer);
			reject(new Error("aborted"));
		});
	});

const stepsInput = z.object({ tag: z.string().min(1).max(64), steps: z.number().int().min(1).max(20), delayMs: z.number().int().min(0).max(10_000) }).strict();

/** `steps` model calls, each prompt `<tag> step <i>`, each followed by `delayMs`; a Markdown document of the answers. */
export const testStepsKind: JobKind<z.infer<typeof stepsInput>> = {
	name: "test-steps",
	input: stepsInput,
	retry: { maxAttempts: 5, baseDelayMs: 200, maxDelayMs: 2000 },
	async run(job) {
		const answers: string[] = [];
		for (let i = 1; i <= job.input.steps; i++) {
			const answer = await job.step(`step-${i}`, async () => {
				const reply = await job.ctx.call<ChatResult, Record<string, unknown>>("llm.chat", {
					messages: [{ role: "user", content: `${job.input.tag} step ${i}` }],
					maxTokens: 8
				});
				await sleep(job.input.delayMs, job.signal);
				return reply.content;
			});
			answers.push(answer);
			await job.progress({ current: i, total: job.input.steps, step: `step ${i} of ${job.input.steps}` });
		}
		return {
			summary: { steps: answers.length },
			document: {
				filename: `${job.input.tag} answers.md`,
				contentType: "text/markdown; charset=utf-8",
				content: answers.map((a, i) => `## Step ${i + 1}\n\n${a}\n`).join("\n")
			}
		};
	}
};

const quickInput = z.object({ n: z.number().int().min(0), delayMs: z.number().int().min(0).max(5000).default(0) }).strict();

/** One recorded step and nothing else: for queues of many jobs. */
export const testQuickKind: JobKind<z.infer<typeof quickInput>> = {
	name: "test-quick",
	input: quickInput,
	retry: { maxAttempts: 3, baseDelayMs: 200, maxDelayMs: 2000 },
	async run(job) {
		const ran = await job.step("work", async () => {
			await sleep(job.input.delayMs, job.signal);
			return { n: job.input.n, attempt: job.attempt };
		});
		return { summary: ran };
	}
};

const failInput = z.object({}).strict();

/** Records the start of each attempt as a step of its own, then times out like a model would. */
export const testFailKind: JobKind<z.infer<typeof failInput>> = {
	name: "test-fail",
	input: failInput,
	retry: { maxAttempts: 4, baseDelayMs: 400, maxDelayMs: 10_000 },
	async run(job) {
		await job.step(`attempt-${job.attempt}`, async () => Date.now());
		throw new UpstreamError("The model did not answer in time", ERR_UPSTREAM_TIMEOUT);
	}
};

export const TEST_JOB_KINDS: readonly JobKind[] = [
	testStepsKind as unknown as JobKind,
	testQuickKind as unknown as JobKind,
	testFailKind as unknown as JobKind
];
