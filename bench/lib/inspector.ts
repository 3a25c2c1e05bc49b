/**
 * CPU profiles of a running chatmesh process through its inspector (the process is started with
 * `--inspect=127.0.0.1:0`): Profiler.start and Profiler.stop around exactly the load of interest,
 * so start-up and compilation stay out of the profile. Uses Node's built-in WebSocket client.
 */
import type { Proc } from "./procs";
import type { CpuProfile } from "./cpuprofile";

export interface Profiler {
	start(): Promise<void>;
	stop(): Promise<CpuProfile>;
	close(): void;
}

export async function attachProfiler(proc: Proc, samplingIntervalUs = 1000): Promise<Profiler> {
	const [, url] = await proc.waitFor(/Debugger listening on (ws:\/\/\S+)/, 30_000);
	const ws = new WebSocket(url);
	await new Promise<void>((resolve, reject) => {
		ws.addEventListener("open", () => resolve(), { once: true });
		ws.addEventListener("error", () => reject(new Error(`cannot attach to ${proc.name}'s inspector`)), { once: true });
	});
	let nextId = 0;
	const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
	ws.addEventListener("message", event => {
		const msg = JSON.parse(String(event.data)) as { id?: number; result?: unknown; error?: { message: string } };
		if (msg.id === undefined) return;
		const waiter = pending.get(msg.id);
		pending.delete(msg.id);
		if (msg.error) waiter?.reject(new Error(msg.error.message));
		else waiter?.resolve(msg.result);
	});
	const send = <T>(method: string, params: Record<string, unknown> = {}) =>
		new Promise<T>((resolve, reject) => {
			const id = ++nextId;
			pending.set(id, { resolve: v => resolve(v as T), reject });
			ws.send(JSON.stringify({ id, method, params }));
		});
	await send("Profiler.enable");
	await send("Profiler.setSamplingInterval", { interval: samplingIntervalUs });
	return {
		start: () => send("Profiler.start"),
		stop: async () => (await send<{ profile: CpuProfile }>("Profiler.stop")).profile,
		close: () => ws.close()
	};
}
