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
	}

	// eslint-disable-next-line @typescript-eslint/no-unused-vars
	interface ServiceSchema<TSettings, TMethods, TVars, TThis> {
		/** Called once mixins are merged, before `created`: the place to shape settings from config. */
		merged?: (this: TThis, schema: ServiceSchema<TSettings, TMethods, TVars, TThis>) => void;
	}
}
