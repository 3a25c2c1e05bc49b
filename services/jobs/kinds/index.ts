/**
 * The job kinds users can submit. Placeholder until the kinds land: the engine registers these
 * at start (see services/jobs/registry.ts).
 */
import type { JobKind } from "../kind";

export const JOB_KINDS: readonly JobKind[] = [];
