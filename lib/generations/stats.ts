/**
 * Counts of the replay log's traffic in this process, for the metrics (lib/metrics.ts reads them
 * at scrape time): events appended by writers, events the store confirmed, and events delivered
 * to subscribers. Plain numbers, bumped on the hot path at the cost of an addition. Shared by
 * every broker of the process (tests run several; a node runs one).
 */
export const generationLogStats = {
	/** Events handed to a writer's append(). */
	appended: 0,
	/** Events the store confirmed (memory: at once; Redis: when the pipeline answered). */
	stored: 0,
	/** Events delivered to a subscriber's onEvent. */
	delivered: 0
};
