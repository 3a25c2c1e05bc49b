/**
 * The job kinds users can start with `POST /api/jobs {kind, input}`; the jobs engine registers
 * each by its name.
 */
import type { JobKind } from "../kind";
import { exportKind } from "./export";
import { reportKind } from "./report";
import { summarizeKind } from "./summarize";

export const JOB_KINDS: readonly JobKind[] = [reportKind, exportKind, summarizeKind];
