import crypto from "node:crypto";
import type { ApiRouteSchema } from "moleculer-web";
import { describe, expect, it } from "vitest";
import { type TestNode, withChatNode } from "../helpers/fixtures";
import { waitFor } from "../helpers/wait";
import { signUp, type ApiClient, type ApiResponse, type Session } from "../helpers/http";
import { registerJobKind } from "../../services/jobs/registry";
import { testQuickKind } from "../jobs/engine-kinds";

// The authorization matrix: for every route that addresses one resource by id, user B gets
// exactly the 404 a missing resource gets, and A's resource is unchanged. Each issue that adds
// such a route adds its row here; the last test fails while a route has no row.
let node: TestNode;
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

const untilFinished = (owner: Session, generationId: string) =>
	waitFor(async () => (await api.get<{ status: string }>(`/api/generations/${generationId}`, { token: owner.accessToken })).body.status !== "streaming", {
		what: "the generation to finish"
	});

async function conversationOf(owner: Session): Promise<string> {
	const res = await api.post<{ id: string }>("/api/conversations", { token: owner.accessToken, body: { title: "mine" } });
	const sent = await api.post<{ generationId: string }>(`/api/conversations/${res.body.id}/messages`, {
		token: owner.accessToken,
		body: { content: "private words" }
	});
	// Finished, so the snapshot does not move by itself while the intruder tries.
	await untilFinished(owner, sent.body.generationId);
	return res.body.id;
}

async function conversationState(owner: Session, id: string) {
	const conv = await api.get(`/api/conversations/${id}`, { token: owner.accessToken });
	const messages = await api.get(`/api/conversations/${id}/messages`, { token: owner.accessToken });
	return conv.status === 200 ? { conv: conv.body, messages: messages.body } : undefined;
}

/** A finished generation of the owner's (finished, so its state no longer moves by itself). */
async function generationOf(owner: Session): Promise<string> {
	const conv = await api.post<{ id: string }>("/api/conversations", { token: owner.accessToken, body: {} });
	const sent = await api.post<{ generationId: string }>(`/api/conversations/${conv.body.id}/messages`, {
		token: owner.accessToken,
		body: { content: "private question" }
	});
	await waitFor(
		async () => (await api.get<{ status: string }>(`/api/generations/${sent.body.generationId}`, { token: owner.accessToken })).body.status !== "streaming",
		{
			what: "the generation to finish"
		}
	);
	return sent.body.generationId;
}

const generationState = async (owner: Session, id: string) => (await api.get(`/api/generations/${id}`, { token: owner.accessToken })).body;

/** A finished job of the owner's (a test kind, registered before the node starts). */
async function jobOf(owner: Session): Promise<string> {
	const res = await api.post<{ jobId: string }>("/api/jobs", { token: owner.accessToken, body: { kind: testQuickKind.name, input: { n: 1 } } });
	await waitFor(async () => (await api.get<{ state: string }>(`/api/jobs/${res.body.jobId}`, { token: owner.accessToken })).body.state === "succeeded", {
		what: "the job to finish"
	});
	return res.body.jobId;
}

const jobState = async (owner: Session, id: string) => (await api.get(`/api/jobs/${id}`, { token: owner.accessToken })).body;
const jobCase = (route: string, attempt: ResourceCase["attempt"]): ResourceCase => ({ route, create: jobOf, snapshot: jobState, attempt });
registerJobKind(testQuickKind);

const conversationCase = (route: string, attempt: ResourceCase["attempt"]): ResourceCase => ({
	route,
	create: conversationOf,
	snapshot: conversationState,
	attempt
});
const generationCase = (route: string, attempt: ResourceCase["attempt"]): ResourceCase => ({
	route,
	create: generationOf,
	snapshot: generationState,
	attempt
});

const MATRIX: ResourceCase[] = [
	conversationCase("GET /api/conversations/:id", (b, id) => api.get(`/api/conversations/${id}`, { token: b.accessToken })),
	conversationCase("PATCH /api/conversations/:id", (b, id) => api.patch(`/api/conversations/${id}`, { token: b.accessToken, body: { title: "taken over" } })),
	conversationCase("DELETE /api/conversations/:id", (b, id) => api.delete(`/api/conversations/${id}`, { token: b.accessToken })),
	conversationCase("GET /api/conversations/:id/messages", (b, id) => api.get(`/api/conversations/${id}/messages`, { token: b.accessToken })),
	conversationCase("POST /api/conversations/:id/messages", (b, id) =>
		api.post(`/api/conversations/${id}/messages`, { token: b.accessToken, body: { content: "injected" } })
	),
	generationCase("GET /api/generations/:id", (b, id) => api.get(`/api/generations/${id}`, { token: b.accessToken })),
	generationCase("GET /api/generations/:id/events", (b, id) => api.get(`/api/generations/${id}/events`, { token: b.accessToken })),
	generationCase("POST /api/generations/:id/cancel", (b, id) => api.post(`/api/generations/${id}/cancel`, { token: b.accessToken })),
	jobCase("GET /api/jobs/:id", (b, id) => api.get(`/api/jobs/${id}`, { token: b.accessToken })),
	jobCase("GET /api/jobs/:id/events", (b, id) => api.get(`/api/jobs/${id}/events`, { token: b.accessToken })),
	jobCase("GET /api/jobs/:id/result", (b, id) => api.get(`/api/jobs/${id}/result`, { token: b.accessToken })),
	jobCase("POST /api/jobs/:id/cancel", (b, id) => api.post(`/api/jobs/${id}/cancel`, { token: b.accessToken })),
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

withChatNode({
	label: "authz",
	simulator: { outputTokens: 5 },
	models: ["sim-small"],
	started: f => {
		({ node, api } = f);
	}
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
