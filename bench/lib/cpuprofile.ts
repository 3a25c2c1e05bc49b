/**
 * Reads a V8 .cpuprofile (DevTools format) and lists where the time went: the functions with the
 * most self time, and the same time grouped by where the code lives (a package, node's own
 * internals, a chatmesh file, GC).
 */
import path from "node:path";

interface ProfileNode {
	id: number;
	callFrame: { functionName: string; url: string; lineNumber: number };
	hitCount?: number;
}

export interface CpuProfile {
	nodes: ProfileNode[];
	startTime: number;
	endTime: number;
	samples?: number[];
}

export interface SelfTime {
	name: string;
	ms: number;
	share: number;
}

function where(url: string, root: string): string {
	if (!url) return "";
	const file = url.startsWith("file://") ? new URL(url).pathname : url;
	const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\/(.*)$/.exec(file);
	if (pkg) return `${pkg[1]}/${pkg[2]}`;
	return file.startsWith(root) ? path.relative(root, file) : file;
}

function group(url: string, functionName: string, root: string): string {
	if (!url) return functionName.startsWith("(") ? functionName : `(native) ${functionName}`;
	const file = url.startsWith("file://") ? new URL(url).pathname : url;
	const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file);
	if (pkg) return `npm:${pkg[1]}`;
	if (url.startsWith("node:")) {
		const parts = url.slice(5).split("/");
		return `node:${parts.slice(0, parts[0] === "internal" ? (parts[1] === "deps" ? 3 : 2) : 1).join("/")}`;
	}
	if (url.startsWith("wasm://")) return "(wasm)";
	return file.startsWith(root) ? path.relative(root, file) : file;
}

/** Self time per function and per code location group, idle excluded from the shares. */
export function summarizeProfile(profile: CpuProfile, root: string, top = 25): { totalMs: number; busyMs: number; functions: SelfTime[]; groups: SelfTime[] } {
	const totalMs = (profile.endTime - profile.startTime) / 1000;
	const hits = new Map<number, number>();
	if (profile.samples?.length) for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1);
	else for (const n of profile.nodes) hits.set(n.id, n.hitCount ?? 0);
	const samples = [...hits.values()].reduce((a, b) => a + b, 0);
	const msPerSample = samples ? totalMs / samples : 0;
	const byFunction = new Map<string, number>();
	const byGroup = new Map<string, number>();
	let idleMs = 0;
	for (const node of profile.nodes) {
		const ms = (hits.get(node.id) ?? 0) * msPerSample;
		if (!ms) continue;
		const { functionName, url, lineNumber } = node.callFrame;
		if (functionName === "(idle)") {
			idleMs += ms;
			continue;
		}
		const name = `${functionName || "(anonymous)"}${url ? ` ${where(url, root)}:${lineNumber + 1}` : ""}`;
		byFunction.set(name, (byFunction.get(name) ?? 0) + ms);
		const g = group(url, functionName, root);
		byGroup.set(g, (byGroup.get(g) ?? 0) + ms);
	}
	const busyMs = totalMs - idleMs;
	const ranked = (m: Map<string, number>) =>
		[...m.entries()]
			.sort((a, b) => b[1] - a[1])
			.slice(0, top)
			.map(([name, ms]) => ({ name, ms, share: busyMs ? ms / busyMs : 0 }));
	return { totalMs, busyMs, functions: ranked(byFunction), groups: ranked(byGroup) };
}
