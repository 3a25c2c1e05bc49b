import { Errors } from "moleculer";
import { describe, expect, it } from "vitest";
import { BadRequestError, UnavailableError } from "../../lib/errors";
import { isNodeLoss, NODE_STOPPING, withNodeFailover } from "../../lib/node-loss";

describe("node loss", () => {
	it("tells a lost or stopping node from a refusal that is the answer", () => {
		expect(isNodeLoss(new Errors.RequestRejectedError({ action: "llm.stream", nodeID: "llm-2" }))).toBe(true);
		expect(isNodeLoss(new Errors.ServiceNotAvailableError({ action: "llm.stream", nodeID: "llm-2" }))).toBe(true);
		expect(isNodeLoss(new UnavailableError("stopping", { reason: NODE_STOPPING }))).toBe(true);
		// Errors cross nodes as plain objects.
		expect(isNodeLoss({ type: "REQUEST_REJECTED" })).toBe(true);
		expect(isNodeLoss(new UnavailableError("No provider answered"))).toBe(false);
		expect(isNodeLoss(new BadRequestError("bad"))).toBe(false);
		expect(isNodeLoss(undefined)).toBe(false);
	});

	it("calls again while the node was lost, up to the bound, and never after another failure", async () => {
		let calls = 0;
		const lost = () => {
			calls += 1;
			return calls < 3 ? Promise.reject(new Errors.RequestRejectedError({ action: "a", nodeID: "n" })) : Promise.resolve("answer");
		};
		await expect(withNodeFailover(lost, { attempts: 3, backoffMs: 1 })).resolves.toBe("answer");
		expect(calls).toBe(3);

		calls = 0;
		await expect(withNodeFailover(lost, { attempts: 2, backoffMs: 1 })).rejects.toMatchObject({ type: "REQUEST_REJECTED" });
		expect(calls).toBe(2);

		calls = 0;
		const refused = () => {
			calls += 1;
			return Promise.reject(new BadRequestError("bad"));
		};
		await expect(withNodeFailover(refused, { attempts: 3, backoffMs: 1 })).rejects.toBeInstanceOf(BadRequestError);
		expect(calls).toBe(1);
	});
});
