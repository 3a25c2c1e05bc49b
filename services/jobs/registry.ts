/**
 * The job kinds a jobs node knows: JOB_KINDS (services/jobs/kinds/) plus any registered with
 * registerJobKind before the node starts. That is the hook for kinds shipped outside the kinds
 * folder, such as the engine tests' own kinds: a process registers them, then starts its node.
 * Every jobs node of a cluster must know the same kinds.
 */
import type { JobKind } from "./kind";
import { JOB_KINDS } from "./kinds";

const registered = new Map<string, JobKind>();

/** Adds a kind (replacing one of the same name). Call before the jobs service starts. */
export function registerJobKind<I>(kind: JobKind<I>): void {
	registered.set(kind.name, kind as unknown as JobKind);
}

/** Every known kind by name: the built-in ones, then the registered ones over them. */
export function jobKinds(): ReadonlyMap<string, JobKind> {
	const kinds = new Map<string, JobKind>();
	for (const kind of JOB_KINDS) kinds.set(kind.name, kind as JobKind);
	for (const [name, kind] of registered) kinds.set(name, kind);
	return kinds;
}
