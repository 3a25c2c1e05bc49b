import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "../helpers/infra";

// The alert rules as Prometheus reads them: promtool checks their syntax and runs their unit
// tests (deploy/prometheus/alerts.test.yml); a rule broken either way makes promtool fail.
const run = promisify(execFile);
const RULES = path.join(REPO_ROOT, "deploy/prometheus/alerts.yml");
const RULE_TESTS = path.join(REPO_ROOT, "deploy/prometheus/alerts.test.yml");

async function promtool(...args: string[]): Promise<{ ok: boolean; output: string }> {
	try {
		const { stdout, stderr } = await run("promtool", args, { timeout: 30_000 });
		return { ok: true, output: stdout + stderr };
	} catch (err) {
		const { stdout = "", stderr = "" } = err as { stdout?: string; stderr?: string };
		return { ok: false, output: stdout + stderr };
	}
}

let dir: string;

/** A copy of the rules with `edit` applied, beside a copy of their tests. */
async function brokenCopy(edit: (rules: string) => string): Promise<{ rules: string; tests: string }> {
	const sub = await fs.mkdtemp(path.join(dir, "case-"));
	const original = await fs.readFile(RULES, "utf8");
	const edited = edit(original);
	expect(edited).not.toBe(original);
	await fs.writeFile(path.join(sub, "alerts.yml"), edited);
	await fs.copyFile(RULE_TESTS, path.join(sub, "alerts.test.yml"));
	return { rules: path.join(sub, "alerts.yml"), tests: path.join(sub, "alerts.test.yml") };
}

beforeAll(async () => {
	dir = await fs.mkdtemp(path.join(os.tmpdir(), "chatmesh-alerts-"));
});

afterAll(async () => {
	await fs.rm(dir, { recursive: true, force: true });
});

describe("Prometheus alert rules", () => {
	it("pass promtool check rules", async () => {
		const { ok, output } = await promtool("check", "rules", RULES);
		expect(output).toContain("SUCCESS: 7 rules found");
		expect(ok).toBe(true);
	});

	it("pass their unit tests (promtool test rules)", async () => {
		const { ok, output } = await promtool("test", "rules", RULE_TESTS);
		expect(output).toContain("SUCCESS");
		expect(ok).toBe(true);
	});

	it("cover every alert the rules define", async () => {
		const rules = await fs.readFile(RULES, "utf8");
		const tests = await fs.readFile(RULE_TESTS, "utf8");
		const alerts = [...rules.matchAll(/- alert: (\w+)/g)].map(m => m[1]);
		expect(alerts).toEqual([
			"ChatmeshHighErrorRatio",
			"ChatmeshSlowFirstToken",
			"ChatmeshProviderCircuitOpen",
			"ChatmeshNodeDown",
			"ChatmeshReplayLagGrowing",
			"ChatmeshJobsDead",
			"ChatmeshJobsBacklogGrowing"
		]);
		for (const alert of alerts) expect(tests).toContain(`alertname: ${alert}`);
	});

	it("a rule with broken PromQL fails the check", async () => {
		const { rules } = await brokenCopy(text => text.replace("max by (provider) (chatmesh_llm_breaker_state", "max by (provider (chatmesh_llm_breaker_state"));
		const { ok, output } = await promtool("check", "rules", rules);
		expect(ok).toBe(false);
		expect(output).toMatch(/parse error|unexpected/i);
	});

	it("a rule that no longer does what its tests say fails the unit tests", async () => {
		// The error ratio counting cancelled answers as failures: the quiet case now alerts.
		const { tests } = await brokenCopy(text => text.replace('status=~"failed|interrupted"', 'status=~"failed|interrupted|cancelled"'));
		const { ok, output } = await promtool("test", "rules", tests);
		expect(ok).toBe(false);
		expect(output).toContain("ChatmeshHighErrorRatio");
	});

	it("a jobs rule that sums the depth every jobs node reports fails its unit test", async () => {
		// Each jobs node reads the same depth from the database: a sum counts the dead jobs once per node.
		const { tests } = await brokenCopy(text =>
			text.replace('max by (namespace, kind) (chatmesh_jobs_depth{state="dead"})', 'sum by (namespace, kind) (chatmesh_jobs_depth{state="dead"})')
		);
		const { ok, output } = await promtool("test", "rules", tests);
		expect(ok).toBe(false);
		expect(output).toContain("ChatmeshJobsDead");
	});
});
