import { defineConfig } from "vitest/config";

// Integration tests talk to the real PostgreSQL, Redis and NATS and spawn node processes: run the
// files one at a time on this small machine so timings stay honest, with generous hook timeouts
// for process start-up.
export default defineConfig({
	test: {
		include: ["test/**/*.test.ts"],
		environment: "node",
		fileParallelism: false,
		testTimeout: 30_000,
		hookTimeout: 60_000,
		reporters: ["default"],
		globalSetup: ["test/helpers/global-setup.ts"]
	}
});
