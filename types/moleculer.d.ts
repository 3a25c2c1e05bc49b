/**
 * chatmesh's action flags, read by one broker middleware (middlewares/auth.middleware.ts) instead of checks
 * repeated in every handler. Moleculer 0.15 declares ActionSchema in a namespace exported with
 * `export =` and re-exported from its index, so the augmentation targets that file directly.
 */
import "moleculer";

declare module "../node_modules/moleculer/src/service" {
	// eslint-disable-next-line @typescript-eslint/no-unused-vars
	interface ActionSchema<TThis> {
		/** required: a signed-in caller; optional: a caller if any; none: no caller needed. */
		auth?: "required" | "optional" | "none";
		/** The caller needs one of these roles (implies auth: required). */
		roles?: string[];
		/**
		 * The action works on one entity of the caller's, named by a param (default `id`). The
		 * middleware loads it with the service method `load` and hands it over in
		 * `ctx.locals.entity`; missing or someone else's, it answers 404 `resource` not found.
		 * Implies auth: required.
		 */
		owner?: OwnerFlag;
	}

	interface OwnerFlag {
		/** The resource named in the 404 ("conversation", "generation"). */
		resource: string;
		/** A method of the service: `(id: string, ctx) => Promise<{ ownerId: string, … } | undefined>`. */
		load: string;
		/** The param holding the entity's id; `id` when unset. */
		param?: string;
	}

	// eslint-disable-next-line @typescript-eslint/no-unused-vars
	interface ServiceSchema<TSettings, TMethods, TVars, TThis> {
		/** Called once mixins are merged, before `created`: the place to shape settings from config. */
		merged?: (this: TThis, schema: ServiceSchema<TSettings, TMethods, TVars, TThis>) => void;
	}
}
