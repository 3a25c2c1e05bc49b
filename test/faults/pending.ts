/**
 * Fault scenarios whose fix has not landed: the suite does not register them, so the default run
 * stays green while they are known to fail. This list is the only place a scenario is left out;
 * remove a name once its fix is merged. FAULTS_RUN_PENDING=1 runs them anyway, to measure.
 * Each name says what it measured when it was listed (6 clients, ~3 s answers, 3 s outages).
 */
export const PENDING_SCENARIOS: ReadonlySet<string> = new Set<string>([]);
