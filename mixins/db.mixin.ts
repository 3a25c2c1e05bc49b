/**
 * moleculer-db on the node's shared Sequelize instance. The adapter gets a model defined by the
 * service (so moleculer-db never calls sync(): the schema belongs to migrations) and never closes
 * the shared instance, which the node closes itself after every service has stopped. moleculer-db's
 * generic CRUD actions are switched off: each service publishes its own, owner-checked actions.
 */
import type { ServiceSchema } from "moleculer";
import DbService from "moleculer-db";
import SequelizeDbAdapter from "moleculer-db-adapter-sequelize";
import type { ModelStatic, Model, Sequelize } from "sequelize";
import { runtimeOf } from "../lib/runtime";

class SharedSequelizeAdapter extends SequelizeDbAdapter {
	override disconnect(): Promise<void> {
		return Promise.resolve();
	}
}

export interface DbMixinOptions {
	/** Defines (or returns the already defined) model on the shared instance. */
	model(sequelize: Sequelize): ModelStatic<Model>;
}

export function DbMixin(opts: DbMixinOptions): Partial<ServiceSchema> {
	return {
		mixins: [DbService as unknown as Partial<ServiceSchema>],
		settings: { idField: "id" } as ServiceSchema["settings"],
		actions: { find: false, count: false, list: false, create: false, insert: false, get: false, update: false, remove: false },
		merged(schema) {
			const database = runtimeOf(this.broker).database;
			if (!database) throw new Error(`service ${schema.name} needs the database`);
			const target = schema as ServiceSchema & { adapter?: unknown; model?: unknown };
			target.adapter = new SharedSequelizeAdapter(database.sequelize as unknown as object);
			target.model = opts.model(database.sequelize);
		}
	};
}
