import crypto from "node:crypto";
import type { ApiRouteSchema } from "moleculer-web";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ChatmeshNode } from "../../lib/node";
import { clusterEnv, createTestDatabase, uniqueNamespace, type TestDatabase } from "../helpers/infra";
import { apiClient, signUp, type ApiClient, type ApiResponse, type Session } from "../helpers/http";
import { startTestNode } from "../helpers/nodes";

// The authorization matrix: for every route that addresses one resource by id, user B gets
// exactly the 404 a missing resource gets, and A's resource is unchanged. Each issue that adds
// such a route adds its row here; the last test fails while a route has no row.
let db: TestDatabase;
let node: ChatmeshNode & { baseUrl: string };
let api: ApiClient;

interface ResourceCase {
	/** "METHOD /path/:id", as the gateway declares it. */
	route: string;
	create(owner: Session): Promise<string>;
	/** What the owner sees of the resource; must not change when B tries. */
	snapshot(owner: Session, id: string): Promise<unknown>;
	/** B's attempt on the id. */
	attempt(intruder: Session, id: string): Promise<ApiResponse>;
}

const MATRIX: ResourceCase[] = [
	{
		route: "DELETE /api/keys/:id",
		async create(owner) {
			const res = await api.post<{ id: string }>("/api/keys", { token: owner.accessToken, body: { name: "owned" } });
			return res.body.id;
		},
		async snapshot(owner, id) {
			const list = await api.get<{ items: Array<{ id: string }> }>("/api/keys", { token: owner.accessToken });
			return list.body.items.find(k => k.id === id);
		},
		attempt: (intruder, id) => api.delete(`/api/keys/${id}`, { token: intruder.accessToken })
	}
];

beforeAll(async () => {
	db = await createTestDatabase("authz");
	node = await startTestNode({ ...clusterEnv(uniqueNamespace("authz"), db.url), SERVICES: "gateway,user" });
	api = apiClient(node.baseUrl);
});
afterAll(async () => {
	await node?.stop();
	await db?.drop();
});

function withoutId(body: unknown, id: string): string {
	return JSON.stringify(body).replaceAll(id, "<id>");
}

describe("authorization matrix", () => {
	it.each(MATRIX.map(c => [c.route, c] as const))("%s: another user's resource is a 404 like a missing one", async (_route, c) => {
		const owner = await signUp(api, "owner");
		const intruder = await signUp(api, "intruder");
		const id = await c.create(owner);
		const before = await c.snapshot(owner, id);
		expect(before).toBeDefined();

		const foreign = await c.attempt(intruder, id);
		const missingId = crypto.randomUUID();
		const missing = await c.attempt(intruder, missingId);
		expect(foreign.status).toBe(404);
		expect(missing.status).toBe(404);
		expect(withoutId(foreign.body, id)).toBe(withoutId(missing.body, missingId));

		expect(await c.snapshot(owner, id)).toEqual(before);
	});

	it("has a row for every route that addresses a resource by id", () => {
		const gateway = node.broker.getLocalService("gateway") as unknown as { settings: { routes: ApiRouteSchema[] } };
		const idRoutes = gateway.settings.routes.flatMap(route =>
			Object.keys(route.aliases ?? {})
				.filter(alias => alias.includes(":"))
				.map(alias => {
					const [method, path] = alias.split(/\s+/);
					return `${method} ${`${route.path ?? ""}/${path}`.replace(/\/+/g, "/")}`;
				})
		);
		// Admin routes act on other users by design; they are covered by the role checks.
		const userRoutes = idRoutes.filter(r => !r.includes("/admin/"));
		expect(userRoutes.length).toBeGreaterThan(0);
		expect(MATRIX.map(c => c.route).sort()).toEqual(userRoutes.sort());
	});
});
