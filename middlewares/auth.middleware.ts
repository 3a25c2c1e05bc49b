/**
 * The one place where an action's `auth`, `roles` and `owner` flags are enforced. The gateway
 * resolves a bearer token into `ctx.meta.user` (id and roles only); this middleware runs on
 * whichever node serves the action, so no service checks authentication or ownership by hand.
 */
import type { ActionSchema, Context, Middleware, Service } from "moleculer";
import type { ChatmeshMeta } from "../lib/auth";
import { ForbiddenError, NotFoundError, UnauthorizedError } from "../lib/errors";

/** The flags as declared on action schemas (types/moleculer.d.ts). */
interface ActionAuthFlags {
	auth?: "required" | "optional" | "none";
	roles?: string[];
	owner?: { resource: string; load: string; param?: string };
}

/** What an owner loader answers: the entity, which names its owner. */
export interface OwnedEntity {
	ownerId: string;
}

/** The entity the `owner` flag loaded for this call (in `ctx.locals.entity`). */
export function ownedEntity<T extends OwnedEntity>(ctx: Context): T {
	const entity = (ctx.locals as { entity?: T }).entity;
	if (!entity) throw new Error("ownedEntity() in an action without the owner flag");
	return entity;
}

type OwnerLoader = (id: string, ctx: Context) => Promise<OwnedEntity | undefined>;

export function AuthMiddleware(): Middleware {
	return {
		name: "Auth",
		localAction(next, action: ActionSchema) {
			const { auth, roles, owner } = action as ActionSchema & ActionAuthFlags;
			const mode = roles?.length || owner ? "required" : (auth ?? "none");
			if (mode !== "required") return next;
			const service = (action as ActionSchema & { service?: Service }).service as (Service & Record<string, unknown>) | undefined;
			const loader = owner ? service?.[owner.load] : undefined;
			if (owner && typeof loader !== "function") throw new Error(`action ${action.name}: owner loader '${owner.load}' is not a method of its service`);
			return async function authorize(ctx: Context<Record<string, unknown>, ChatmeshMeta, { entity?: OwnedEntity }>) {
				const user = ctx.meta.user;
				if (!user) throw new UnauthorizedError();
				if (roles?.length && !roles.some(r => user.roles.includes(r))) throw new ForbiddenError();
				if (owner) {
					const id = String(ctx.params[owner.param ?? "id"]);
					const entity = await (loader as OwnerLoader).call(service, id, ctx);
					// Someone else's entity is exactly as missing as one that does not exist.
					if (!entity || entity.ownerId !== user.id) throw new NotFoundError(owner.resource, id);
					ctx.locals.entity = entity;
				}
				return next.call(this, ctx);
			};
		}
	};
}
