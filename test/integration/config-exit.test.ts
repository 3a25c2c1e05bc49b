import { describe, expect, it } from "vitest";
import { spawnNode } from "../helpers/processes";

// A bad value stops the real process before anything starts, with one line naming the variable.
describe("the process refuses a bad configuration", () => {
	it.each([
		["DATABASE_URL", "mysql://root@127.0.0.1/chatmesh"],
		["TRANSPORTER", "kafka://127.0.0.1:9092"],
		["LLM_PROVIDERS", '[{"name":"x","baseURL":"http://127.0.0.1:1/v1"'],
		["REDIS_URL", "127.0.0.1:6379"],
		["JWT_SECRET", "secret"]
	])(
		"%s=%s exits non-zero with one line naming it",
		async (variable, value) => {
			const proc = spawnNode({ [variable]: value });
			const code = await proc.exited;
			expect(code).not.toBe(0);
			const lines = proc.output().trim().split("\n");
			expect(lines).toHaveLength(1);
			expect(lines[0]).toMatch(new RegExp(`^chatmesh: invalid configuration: ${variable} must be `));
		},
		30_000
	);

	it("production without JWT_SECRET exits naming it", async () => {
		const proc = spawnNode({ NODE_ENV: "production" });
		expect(await proc.exited).not.toBe(0);
		expect(proc.output().trim()).toMatch(/^chatmesh: invalid configuration: JWT_SECRET must be set in production[^\n]*$/);
	}, 30_000);

	it("a clustered node that needs the database exits when DATABASE_URL is missing", async () => {
		const proc = spawnNode({ TRANSPORTER: "nats://127.0.0.1:4222", SERVICES: "gateway" });
		expect(await proc.exited).not.toBe(0);
		expect(proc.output().trim()).toMatch(/^chatmesh: invalid configuration: DATABASE_URL must be set when TRANSPORTER is set[^\n]*$/);
	}, 30_000);
});
