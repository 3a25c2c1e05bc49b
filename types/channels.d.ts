/**
 * The `channels` property @moleculer/channels reads from a service schema (see
 * services/jobs/channel.ts); its own types do not declare it.
 */
import "moleculer";

declare module "../node_modules/moleculer/src/service" {
	interface ChannelDefinition {
		handler(payload: unknown, raw: unknown): Promise<void> | void;
		group?: string;
		maxInFlight?: number;
		maxRetries?: number;
	}

	// eslint-disable-next-line @typescript-eslint/no-unused-vars
	interface ServiceSchema<TSettings, TMethods, TVars, TThis> {
		channels?: Record<string, ChannelDefinition>;
	}
}
