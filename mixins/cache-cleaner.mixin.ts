/**
 * Drops cached results on every node that runs the service: here at once, elsewhere through a
 * broadcast, so memory cachers (one per node) and a shared Redis cacher are both right after a
 * write. An exact key is deleted (cheap); a pattern with `*` is cleaned (on Redis that scans the
 * keyspace, so hot paths use exact keys). Keys built with `scopedCacheKey` start with the owner's
 * id, so one user's write touches only that user's entries.
 */
import type { Context, ServiceBroker, ServiceSchema } from "moleculer";

export interface CacheCleanEvent {
	patterns: string[];
}

/** `action:scope:rest` — the scope (usually a user id) stays readable so patterns can match it. */
export function scopedCacheKey(action: string, scope: string, ...rest: Array<string | number | undefined>): string {
	return `${action}:${scope}:${rest.map(part => (part === undefined ? "" : String(part))).join("|")}`;
}

async function drop(broker: ServiceBroker, patterns: string[]): Promise<void> {
	if (!broker.cacher) return;
	const exact = patterns.filter(p => !p.includes("*"));
	if (exact.length) await broker.cacher.del(exact);
	for (const pattern of patterns) if (pattern.includes("*")) await broker.cacher.clean(pattern);
}

export interface CacheCleanerMethods {
	cleanCache(patterns: string[]): Promise<void>;
}

export function CacheCleanerMixin(serviceName: string): Partial<ServiceSchema> {
	const event = `${serviceName}.cacheClean`;
	return {
		events: {
			[event]: {
				params: { patterns: { type: "array", items: "string" } },
				async handler(this: { broker: ServiceBroker }, ctx: Context<CacheCleanEvent>) {
					// The sender dropped its own keys before broadcasting.
					if (ctx.nodeID === this.broker.nodeID) return;
					await drop(this.broker, ctx.params.patterns);
				}
			}
		},
		methods: {
			async cleanCache(this: { broker: ServiceBroker }, patterns: string[]) {
				await drop(this.broker, patterns);
				await this.broker.broadcast(event, { patterns } satisfies CacheCleanEvent);
			}
		}
	};
}
