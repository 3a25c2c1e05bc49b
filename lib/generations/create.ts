/** Picks the generation log a node uses: Redis Streams in a cluster, memory in one process. */
import type { CreateGenerationLogOptions, GenerationLog } from "./log";
import { MemoryGenerationLog } from "./memory-log";
import { RedisGenerationLog } from "./redis-log";

/** Redis expiries are whole seconds (0 would mean none), and a bound of 0 events keeps nothing. */
function assertWhole(name: string, value: number): void {
	if (!Number.isInteger(value) || value < 1) throw new TypeError(`generation log ${name} must be a whole number >= 1`);
}

/** The Redis Streams log when a Redis URL is given (cluster mode), the memory log otherwise. */
export function createGenerationLog(opts: CreateGenerationLogOptions): GenerationLog {
	assertWhole("maxEvents", opts.maxEvents);
	assertWhole("ttlS", opts.ttlS);
	assertWhole("runningTtlS", opts.runningTtlS);
	const { redis, logger, ...settings } = opts;
	return redis ? new RedisGenerationLog(settings, redis, logger) : new MemoryGenerationLog(settings, logger);
}
