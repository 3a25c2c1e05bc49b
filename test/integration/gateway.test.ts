import type { Service, ServiceSchema } from "moleculer";
import { describe, expect, it } from "vitest";
import { extendService } from "../../lib/service";
import { ERR_INTERNAL, ERR_INVALID_JSON, ERR_PAYLOAD_TOO_LARGE, NotFoundError } from "../../lib/errors";
import type { ApiRouteSchema } from "moleculer-web";
import GatewayService from "../../services/gateway/gateway.service";
import { type TestNode, withChatNode } from "../helpers/fixtures";

let node: TestNode;
let probeBase: string;

// A second gateway on the same node with routes to a probe service, so the real error handler
// meets a plain Error, a chatmesh error, malformed JSON and an oversized body.
const Probe: ServiceSchema = {
	name: "probe",
	actions: {
		boom: () => {
			throw new Error("connection string postgres://admin:hunter2@db leaked");
		},
		missing: () => {
			throw new NotFoundError("conversation", "c-9");
		},
		echo: { params: { text: "string" }, handler: ctx => ({ text: (ctx.params as { text: string }).text }) }
	}
};

const probeRoutes: ApiRouteSchema[] = [
	{
		path: "/probe",
		mappingPolicy: "restrict",
		bodyParsers: { json: { limit: "1kb", strict: true } },
		aliases: { "POST boom": "probe.boom", "GET missing": "probe.missing", "POST echo": "probe.echo" }
	}
];

withChatNode({
	label: "gateway",
	simulator: false,
	nats: true,
	env: { SERVICES: "gateway,llm" },
	async started(f) {
		node = f.node;
		node.broker.createService(Probe);
		const probeGateway = node.broker.createService(
			extendService(GatewayService, {
				name: "probe-gateway",
				// Runs after the gateway's own merged(), which sets routes from config.
				merged(schema) {
					schema.settings = { ...schema.settings, port: 0, ip: "127.0.0.1", routes: probeRoutes };
				}
			})
		) as Service & { server: { address(): { port: number } } };
		await node.broker.waitForServices(["probe", "probe-gateway"]);
		probeBase = `http://127.0.0.1:${probeGateway.server.address().port}/probe`;
	}
});

describe("gateway", () => {
	it("answers /health without checking dependencies", async () => {
		const res = await fetch(`${node.baseUrl}/health`);
		expect(res.status).toBe(200);
		expect(await res.json()).toMatchObject({ status: "ok", nodeID: node.broker.nodeID });
	});

	it("keeps idle keep-alive connections for 65 s, longer than the pools in front of it", async () => {
		const res = await fetch(`${node.baseUrl}/health`);
		await res.arrayBuffer();
		expect(res.headers.get("keep-alive")).toBe("timeout=65");
	});

	it("answers /ready with every check named", async () => {
		const res = await fetch(`${node.baseUrl}/ready`);
		expect(res.status).toBe(200);
		const body = (await res.json()) as { status: string; checks: Record<string, { status: string }> };
		expect(body.status).toBe("ready");
		expect(Object.keys(body.checks).sort()).toEqual(["cacher", "database", "lifecycle", "models", "transporter"]);
	});

	it("turns not-ready with 503 when the model endpoint stops answering", async () => {
		await node.simulator?.close();
		const res = await fetch(`${node.baseUrl}/ready`);
		expect(res.status).toBe(503);
		const body = (await res.json()) as { checks: Record<string, { status: string; detail: string }> };
		expect(body.checks.models.status).toBe("fail");
		expect(body.checks.database.status).toBe("ok");
	});

	it("answers an unknown route with a JSON 404", async () => {
		const res = await fetch(`${node.baseUrl}/no/such/route`);
		expect(res.status).toBe(404);
		expect(await res.json()).toMatchObject({ code: 404, type: "NOT_FOUND" });
	});

	it("hides an unknown error behind a generic 500 with a request id", async () => {
		const res = await fetch(`${probeBase}/boom`, { method: "POST" });
		expect(res.status).toBe(500);
		const text = await res.text();
		expect(text).not.toContain("hunter2");
		expect(text).not.toContain("at ");
		const body = JSON.parse(text) as { type: string; message: string; data: { requestId: string } };
		expect(body.type).toBe(ERR_INTERNAL);
		expect(body.message).toBe("Internal server error");
		expect(body.data.requestId).toMatch(/\S{8,}/);
	});

	it("passes a chatmesh error through with its status, type and data", async () => {
		const res = await fetch(`${probeBase}/missing`);
		expect(res.status).toBe(404);
		expect(await res.json()).toEqual({
			name: "NotFoundError",
			message: "conversation not found",
			code: 404,
			type: "NOT_FOUND",
			data: { resource: "conversation", id: "c-9" }
		});
	});

	it("answers malformed JSON with 400 INVALID_JSON", async () => {
		const res = await fetch(`${probeBase}/echo`, {
			method: "POST",
			headers: { "content-type": "application/json" },
			body: '{"text": "unterminated'
		});
		expect(res.status).toBe(400);
		expect(await res.json()).toMatchObject({ code: 400, type: ERR_INVALID_JSON });
	});

	it("answers an oversized body with 413 PAYLOAD_TOO_LARGE", async () => {
		const res = await fetch(`${probeBase}/echo`, {
			method: "POST",
			headers: { "content-type": "application/json" },
			body: JSON.stringify({ text: "x".repeat(4096) })
		});
		expect(res.status).toBe(413);
		expect(await res.json()).toMatchObject({ code: 413, type: ERR_PAYLOAD_TOO_LARGE });
	});

	it("answers invalid params with 422 VALIDATION_ERROR naming the field", async () => {
		const res = await fetch(`${probeBase}/echo`, {
			method: "POST",
			headers: { "content-type": "application/json" },
			body: JSON.stringify({ text: 42 })
		});
		expect(res.status).toBe(422);
		const body = (await res.json()) as { type: string; data: Array<{ field: string }> };
		expect(body.type).toBe("VALIDATION_ERROR");
		expect(body.data[0].field).toBe("text");
	});
});
