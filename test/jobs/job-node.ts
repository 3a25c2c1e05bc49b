/**
 * A chatmesh node process that also knows the engine tests' job kinds: registers them, then runs
 * the ordinary entry (server.ts). Spawned with `node --import tsx test/jobs/job-node.ts`.
 */
import { registerJobKind } from "../../services/jobs/registry";
import { TEST_JOB_KINDS } from "./engine-kinds";

for (const kind of TEST_JOB_KINDS) registerJobKind(kind);
await import("../../server");
