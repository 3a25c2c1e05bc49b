/**
 * `node --import tsx bench/moderation.ts [batches]`: what the local moderation checks (profanity,
 * prompt injection, a deny list) cost on one text of a few KB, run together as the moderation
 * service runs them. Prints the median and the best milliseconds per text over the batches (100
 * texts each, after a warm-up), then one JSON line. No network: the provider check is not included.
 */
import { ServiceBroker } from "moleculer";
import { combine } from "../services/moderation/checks";
import { denyListCheck } from "../services/moderation/checks/deny-list";
import { profanityCheck } from "../services/moderation/checks/profanity";
import { promptInjectionCheck } from "../services/moderation/checks/prompt-injection";
import { normalize } from "../services/moderation/normalize";
import { median, round } from "./lib/stats";

const BATCHES = Number(process.argv[2] ?? 20);
const PER_BATCH = 100;

const checks = [profanityCheck(), promptInjectionCheck(), denyListCheck(["bananas", "project x"])];
const text = "Lorem ipsum dolor sit amet, 2024 edition: see v1.2, item #3 and the quick brown fox!\n".repeat(30);
// A real Moleculer logger that writes nothing (the broker is never started).
const logger = new ServiceBroker({ logger: false }).getLogger("bench");

async function judge(): Promise<void> {
	// As the service does: one normalization shared by every check.
	const ctx = { normalized: normalize(text), logger };
	const verdict = combine(await Promise.all(checks.map(c => c.run(text, "input", ctx))));
	if (verdict.action !== "allow") throw new Error(`the bench text was not allowed: ${verdict.reasons.join("; ")}`);
}

for (let i = 0; i < 50; i++) await judge();
const perText: number[] = [];
for (let batch = 0; batch < BATCHES; batch++) {
	const start = performance.now();
	for (let i = 0; i < PER_BATCH; i++) await judge();
	perText.push((performance.now() - start) / PER_BATCH);
}

const result = { characters: text.length, batches: BATCHES, medianMs: round(median(perText), 4), bestMs: round(Math.min(...perText), 4) };
process.stdout.write(
	`local moderation of ${result.characters} characters: median ${result.medianMs} ms, best ${result.bestMs} ms per text (${BATCHES} × ${PER_BATCH})\n`
);
process.stdout.write(`${JSON.stringify(result)}\n`);
