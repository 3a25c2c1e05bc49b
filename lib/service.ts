/**
 * A service as a node loads it: its name and how to create it on a broker. Each schema stays
 * typed by its own settings, methods and vars (handlers see `this` with exactly those), which
 * Moleculer's plain `ServiceSchema` cannot hold for all services at once; the broker's generic
 * createService takes each one as it is.
 */
import type { Service, ServiceBroker, ServiceSchema } from "moleculer";

export interface ServiceDefinition {
	readonly name: string;
	/** Creates the service on the broker (not started: broker.start() starts it). */
	create(broker: ServiceBroker): Service;
}

export function defineService<S, M, V>(schema: ServiceSchema<S, M, V>): ServiceDefinition {
	return { name: schema.name, create: broker => broker.createService(schema) };
}

/** What a deployment (or a test) changes when it builds a service on one of chatmesh's. */
export interface ServiceExtension<S, M, V> {
	name?: string;
	/** Merged over the base's settings, key by key. */
	settings?: Partial<S>;
	/** Runs after the base's own merged(). */
	merged?: ServiceSchema<S, M, V>["merged"];
}

/**
 * A service built on another one, as a Moleculer mixin would build it, but typed by the base's
 * settings, methods and vars: the base's actions, events and lifecycle, under its own name, with
 * its own settings object (never the base's, which every broker in the process shares).
 */
export function extendService<S extends object, M, V>(base: ServiceSchema<S, M, V>, ext: ServiceExtension<S, M, V>): ServiceSchema<S, M, V> {
	if (!base.settings) throw new TypeError(`service ${base.name} has no settings to extend`);
	const baseMerged = base.merged;
	const extMerged = ext.merged;
	return {
		...base,
		name: ext.name ?? base.name,
		settings: { ...base.settings, ...ext.settings },
		merged(schema) {
			baseMerged?.call(this, schema);
			extMerged?.call(this, schema);
		}
	};
}
