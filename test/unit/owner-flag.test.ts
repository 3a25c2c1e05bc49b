import { type Context, ServiceBroker } from "moleculer";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ChatmeshMeta } from "../../lib/auth";
import { AuthMiddleware, ownedEntity } from "../../middlewares/auth.middleware";

// The `owner` action flag on a local broker: a small service whose loader knows two notes, one of
// alice's and one of bob's. The flag's middleware must answer a note that is not the caller's
// exactly as a missing one, and hand the caller's own note to the handler.
interface Note {
	id: string;
	ownerId: string;
	text: string;
}

const NOTES: Note[] = [
	{ id: "n1", ownerId: "alice", text: "alice's note" },
	{ id: "n2", ownerId: "bob", text: "bob's note" }
];

const broker = new ServiceBroker({ logger: false, middlewares: [AuthMiddleware()] });
const as = (id: string) => ({ meta: { user: { id, roles: ["user"] } } });

beforeAll(async () => {
	broker.createService({
		name: "notes",
		actions: {
			get: {
				params: { id: "string" },
				owner: { resource: "note", load: "noteById" },
				handler(ctx: Context<{ id: string }, ChatmeshMeta>) {
					return ownedEntity<Note>(ctx).text;
				}
			},
			byKey: {
				params: { key: "string" },
				owner: { resource: "note", load: "noteById", param: "key" },
				handler(ctx: Context<{ key: string }, ChatmeshMeta>) {
					return ownedEntity<Note>(ctx).id;
				}
			}
		},
		methods: {
			async noteById(id: string) {
				return NOTES.find(n => n.id === id);
			}
		}
	});
	await broker.start();
});

afterAll(() => broker.stop());

describe("the owner flag", () => {
	it("hands the caller's own entity to the handler", async () => {
		await expect(broker.call("notes.get", { id: "n1" }, as("alice"))).resolves.toBe("alice's note");
		await expect(broker.call("notes.byKey", { key: "n2" }, as("bob"))).resolves.toBe("n2");
	});

	it("answers someone else's entity exactly like a missing one", async () => {
		const missing = await broker.call("notes.get", { id: "n9" }, as("alice")).catch((err: unknown) => err);
		const other = await broker.call("notes.get", { id: "n2" }, as("alice")).catch((err: unknown) => err);
		expect(missing).toMatchObject({ name: "NotFoundError", code: 404, type: "NOT_FOUND", message: "note not found", data: { resource: "note", id: "n9" } });
		expect(other).toMatchObject({ name: "NotFoundError", code: 404, type: "NOT_FOUND", message: "note not found", data: { resource: "note", id: "n2" } });
	});

	it("requires a caller", async () => {
		await expect(broker.call("notes.get", { id: "n1" })).rejects.toMatchObject({ type: "UNAUTHORIZED" });
	});

	it("refuses a loader that is not a method of the service", () => {
		const other = new ServiceBroker({ logger: false, middlewares: [AuthMiddleware()] });
		expect(() => other.createService({ name: "broken", actions: { get: { owner: { resource: "x", load: "nope" }, handler: () => null } } })).toThrow(
			/owner loader 'nope'/
		);
	});
});
