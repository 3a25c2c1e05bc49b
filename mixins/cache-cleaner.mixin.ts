/**
 * Drops cached action results by key pattern on every node that runs the service: here at once,
 * elsewhere through a broadcast, so memory cachers (one per node) and a shared Redis cacher are
 * both right after a write. Keys built with `scopedCacheKey` start with the owner's id, so one
 * user's write cleans only that user's entries.
 */
import type { Context, ServiceBroker, ServiceSchema } from "moleculer";

export interface CacheCleanEvent {
	patterns: string[];
}

/** `action:scope:rest` — the scope (usually a user id) stays readable so patterns can match it. */
export function scopedCacheKey(action: string, scope: string, ...rest: Array<string | number | undefined>): string {
	return `${action}:${scope}:${rest.map(part => (part === undefined ? "" : String(part))).join("|")}`;
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
					if (!this.broker.cacher) return;
					for (const pattern of ctx.params.patterns) await this.broker.cacher.clean(pattern);
				}
			}
		},
		methods: {
			async cleanCache(this: { broker: ServiceBroker }, patterns: string[]) {
				if (this.broker.cacher) for (const pattern of patterns) await this.broker.cacher.clean(pattern);
				await this.broker.broadcast(event, { patterns } satisfies CacheCleanEvent);
			}
		}
	};
}
