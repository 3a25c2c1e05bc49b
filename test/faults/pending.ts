/**
 * Fault scenarios whose fix has not landed: the suite does not register them, so the default run
 * stays green while they are known to fail. This list is the only place a scenario is left out;
 * remove a name once its fix is merged. FAULTS_RUN_PENDING=1 runs them anyway, to measure.
 * Each name says what it measured when it was listed (6 clients, ~3 s answers, 3 s outages).
 */
export const PENDING_SCENARIOS: ReadonlySet<string> = new Set<string>([
	// Turns started after the kill end failed/REQUEST_REJECTED (3) until the dead node leaves the registry.
	"llm-node-killed",
	// 12 turns refused 503 REQUEST_REJECTED, 2 answers left streaming with their reservations, 2 clients with no final event, recovery 5.6 s.
	"conversation-node-killed",
	// 3-4 turns refused 503 REQUEST_REJECTED (calls to the services of the dead gateway); 3 reservations (6204 tokens) held.
	"gateway-killed",
	// Answers complete in the database, but 6 of 8 clients never hear the final event (the replay log went with Redis).
	"redis-outage",
	// 3-6 answers left streaming with 6 reservations (12408 tokens) held, 3-6 clients with no final event, 2-4 turns refused 503/504.
	"nats-outage",
	// 6 answers left streaming with 6 reservations (12408 tokens) held; their clients hear no final event.
	"postgres-outage"
]);
