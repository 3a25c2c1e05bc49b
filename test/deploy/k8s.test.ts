import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { assertNodeConfig, ConfigError, loadConfig, SERVICE_NAMES } from "../../lib/config";
import { HEALTH_PATH, READY_PATH } from "../../lib/health/listener";
import { apiRoutes } from "../../services/gateway/routes";
import { REPO_ROOT } from "../helpers/infra";
import { admittedFromOutside, buildKustomization, checkProperties, type K8sObject, validateSchemas, workloads } from "./k8s-checks";

// k8s/ checked with no cluster and no kubectl: every object of the base and the dev overlay
// against the Kubernetes schemas (kubernetes-models), and the properties the deployment relies on
// (k8s-checks.ts). The paths the probes must use come from the code that serves them.
const BASE = path.join(REPO_ROOT, "k8s/base");
const DEV = path.join(REPO_ROOT, "k8s/overlays/dev");

/** The gateway's probe paths: the aliases of its root route for gateway.health and gateway.ready. */
function gatewayPaths(): { live: string; ready: string } {
	const find = (action: string) => {
		for (const route of apiRoutes(1024))
			for (const [alias, target] of Object.entries(route.aliases ?? {}))
				if (target === action) {
					const [method, sub] = alias.split(/\s+/);
					if (method === "GET") return path.posix.join(route.path ?? "/", sub);
				}
		throw new Error(`no GET alias for ${action}`);
	};
	return { live: find("gateway.health"), ready: find("gateway.ready") };
}

/** The path moleculer.config.ts gives the Prometheus reporter. */
function metricsPath(): string {
	const served = /path: "(\/[^"]*)"/.exec(fs.readFileSync(path.join(REPO_ROOT, "moleculer.config.ts"), "utf8"))?.[1];
	if (!served) throw new Error("moleculer.config.ts names no metrics path");
	return served;
}

const MONITORING = "monitoring";
const APP = {
	image: "chatmesh",
	allServices: [...SERVICE_NAMES],
	ports: {
		PORT: { ...gatewayPaths(), needs: ["gateway"] },
		HEALTH_PORT: { live: HEALTH_PATH, ready: READY_PATH, needs: [] }
	},
	metrics: { portVariable: "METRICS_PORT", hostVariable: "METRICS_HOST", path: metricsPath(), monitoringNamespace: MONITORING }
};
const OUTSIDE = ["chatmesh-gateway"];

const find = (objects: K8sObject[], kind: string, name: string) => {
	const o = objects.find(x => x.kind === kind && x.metadata.name === name);
	if (!o) throw new Error(`no ${kind} ${name}`);
	return o;
};

/** The environment a chatmesh container gets: its ConfigMaps and Secrets, then its own env. */
function containerEnv(objects: K8sObject[], deployment: string): Record<string, string> {
	const container = workloads(objects).find(w => w.name === deployment)?.pod.containers[0];
	if (!container) throw new Error(`no Deployment ${deployment}`);
	const env: Record<string, string> = {};
	for (const from of container.envFrom ?? []) {
		if (from.configMapRef) Object.assign(env, find(objects, "ConfigMap", from.configMapRef.name).data);
		if (from.secretRef) Object.assign(env, find(objects, "Secret", from.secretRef.name).stringData);
	}
	for (const e of container.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
	return env;
}

const ROLES = ["chatmesh-gateway", "chatmesh-core", "chatmesh-llm", "chatmesh-jobs"];

describe.each([
	["base", BASE],
	["overlays/dev", DEV]
])("k8s/%s", (_label, dir) => {
	const objects = buildKustomization(dir);

	it("validates every object against the Kubernetes schemas", () => {
		expect(objects.length).toBeGreaterThan(10);
		expect(validateSchemas(objects)).toEqual([]);
	});

	it("passes every property check (probes, resources, security, selectors, references, network policy)", () => {
		expect(checkProperties(objects, APP, OUTSIDE)).toEqual([]);
		expect(admittedFromOutside(objects, MONITORING)).toEqual(OUTSIDE);
		// Counting the metrics rule too, every chatmesh pod is open from outside: on that rule alone.
		expect(admittedFromOutside(objects)).toEqual(ROLES);
	});

	it("has one Deployment per role, HPAs for gateway and llm, a PDB for each role, everything in the chatmesh namespace", () => {
		expect(find(objects, "Namespace", "chatmesh")).toBeDefined();
		for (const name of ROLES) {
			expect(find(objects, "Deployment", name).metadata.namespace).toBe("chatmesh");
			expect(find(objects, "PodDisruptionBudget", name)).toBeDefined();
		}
		const hpaTargets = objects.filter(o => o.kind === "HorizontalPodAutoscaler").map(o => (o.spec as { scaleTargetRef: { name: string } }).scaleTargetRef.name);
		expect(hpaTargets.sort()).toEqual(["chatmesh-gateway", "chatmesh-llm"]);
		expect(containerEnv(objects, "chatmesh-core").SERVICES).toBe("user,conversation,quota,moderation,tool");
		expect(containerEnv(objects, "chatmesh-llm").SERVICES).toBe("llm");
		expect(containerEnv(objects, "chatmesh-gateway").SERVICES).toBe("gateway");
		expect(containerEnv(objects, "chatmesh-jobs").SERVICES).toBe("jobs");
	});

	it("runs two jobs workers, probed on the health listener's paths and port like the core node", () => {
		const jobs = workloads(objects).find(w => w.name === "chatmesh-jobs");
		expect(jobs?.object.spec).toMatchObject({ replicas: 2 });
		const c = jobs?.pod.containers[0];
		const healthPort = c?.ports?.find(p => p.name === "health")?.containerPort;
		expect(String(healthPort)).toBe(containerEnv(objects, "chatmesh-jobs").HEALTH_PORT);
		expect(c?.startupProbe?.httpGet).toEqual({ path: HEALTH_PATH, port: "health" });
		expect(c?.livenessProbe?.httpGet).toEqual({ path: HEALTH_PATH, port: "health" });
		expect(c?.readinessProbe?.httpGet).toEqual({ path: READY_PATH, port: "health" });
		expect((find(objects, "PodDisruptionBudget", "chatmesh-jobs").spec as { selector: unknown }).selector).toEqual(
			jobs?.object.spec && { matchLabels: jobs.selector }
		);
		// A worker needs the database: its configuration must name one (the Secret's DATABASE_URL).
		expect(containerEnv(objects, "chatmesh-jobs").DATABASE_URL).toMatch(/^postgres(ql)?:\/\//);
	});

	it("lets Prometheus in the monitoring namespace scrape every chatmesh pod on the metrics port its annotations name, and nothing else in", () => {
		const config = find(objects, "ConfigMap", "chatmesh-config").data as Record<string, string>;
		for (const name of ROLES) {
			const w = workloads(objects).find(x => x.name === name);
			const a = w?.podAnnotations ?? {};
			expect(a["prometheus.io/scrape"], name).toBe("true");
			expect(a["prometheus.io/path"], name).toBe(APP.metrics.path);
			expect(a["prometheus.io/port"], name).toBe(config.METRICS_PORT);
			expect(w?.pod.containers[0].ports, name).toContainEqual(expect.objectContaining({ name: "metrics", containerPort: Number(config.METRICS_PORT) }));
		}
		expect(config.METRICS_HOST).toBe("0.0.0.0");
		const policy = find(objects, "NetworkPolicy", "chatmesh-metrics-from-monitoring").spec as { ingress: Array<{ from: unknown[]; ports: unknown[] }> };
		expect(policy.ingress).toEqual([
			{ from: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": MONITORING } } }], ports: [{ port: "metrics", protocol: "TCP" }] }
		]);
	});

	it("routes outside traffic through an nginx Ingress fit for WebSockets, SSE and socket.io long-polling", () => {
		const ingress = find(objects, "Ingress", "chatmesh");
		const a = ingress.metadata.annotations ?? {};
		const prefix = "nginx.ingress.kubernetes.io/";
		expect(a[`${prefix}proxy-buffering`]).toBe("off");
		expect(Number(a[`${prefix}proxy-read-timeout`])).toBeGreaterThanOrEqual(3600);
		expect(Number(a[`${prefix}proxy-send-timeout`])).toBeGreaterThanOrEqual(3600);
		expect(a[`${prefix}affinity`]).toBe("cookie");
		expect((ingress.spec as { ingressClassName: string }).ingressClassName).toBe("nginx");
	});
});

describe("configuration the manifests give chatmesh", () => {
	it("opens the ports the image exposes, and runs the image's user", () => {
		const dockerfile = fs.readFileSync(path.join(REPO_ROOT, "Dockerfile"), "utf8");
		const exposed = [...dockerfile.matchAll(/^EXPOSE\s+(.+)$/gm)].flatMap(m => m[1].trim().split(/\s+/));
		const config = find(buildKustomization(BASE), "ConfigMap", "chatmesh-config").data as Record<string, string>;
		expect(exposed).toContain(config.PORT);
		expect(exposed).toContain(config.HEALTH_PORT);
		// USER node in the image is uid 1000: runAsNonRoot needs the number to verify it.
		expect(dockerfile).toMatch(/^USER node$/m);
		for (const w of workloads(buildKustomization(BASE))) expect(w.pod.securityContext?.runAsUser, w.name).toBe(1000);
	});

	it("the dev overlay's environment is a valid configuration for every role", () => {
		const objects = buildKustomization(DEV);
		for (const role of ROLES) {
			const config = loadConfig(containerEnv(objects, role));
			expect(() => assertNodeConfig(config), role).not.toThrow();
			expect(config.nodeEnv).toBe("production");
		}
	});

	it("the base Secret is a template chatmesh refuses to start on", () => {
		const objects = buildKustomization(BASE);
		const secret = find(objects, "Secret", "chatmesh-secrets").stringData as Record<string, string>;
		expect(secret.JWT_SECRET).toBe("REPLACE_ME");
		expect(new URL(secret.DATABASE_URL).password).toBe("REPLACE_ME");
		expect(() => loadConfig(containerEnv(objects, "chatmesh-gateway"))).toThrow(ConfigError);
	});

	it("the dev overlay adds single-replica PostgreSQL, Redis and NATS with JetStream, each probed", () => {
		const objects = buildKustomization(DEV);
		for (const name of ["postgres", "redis", "nats"]) {
			const w = workloads(objects).find(x => x.name === name);
			expect(w?.object.spec).toMatchObject({ replicas: 1 });
			const c = w?.pod.containers[0];
			expect(c?.readinessProbe && c.livenessProbe && c.startupProbe).toBeTruthy();
			expect(find(objects, "Service", name)).toBeDefined();
		}
		expect(workloads(objects).find(x => x.name === "nats")?.pod.containers[0].args).toContain("--jetstream");
	});
});

describe("the checks catch broken manifests", () => {
	const objects = buildKustomization(BASE);
	const mutate = (fn: (copy: K8sObject[]) => void) => {
		const copy = structuredClone(objects);
		fn(copy);
		return copy;
	};
	const container = (objs: K8sObject[], name: string) => {
		const c = workloads(objs).find(w => w.name === name)?.pod.containers[0];
		if (!c) throw new Error(`no ${name}`);
		return c;
	};

	it("a readiness probe on a path chatmesh does not serve", () => {
		const broken = mutate(o => {
			const probe = container(o, "chatmesh-gateway").readinessProbe;
			if (probe?.httpGet) probe.httpGet.path = "/readyz";
		});
		expect(checkProperties(broken, APP, OUTSIDE)).toEqual([
			"Deployment chatmesh-gateway container chatmesh: readinessProbe path /readyz is not what chatmesh serves for it on PORT (/ready)"
		]);
	});

	it("a probe on a port the container does not declare, or one its configuration does not open", () => {
		const undeclared = mutate(o => {
			const probe = container(o, "chatmesh-core").livenessProbe;
			if (probe?.httpGet) probe.httpGet.port = 9999;
		});
		expect(checkProperties(undeclared, APP, OUTSIDE).join("\n")).toMatch(
			/chatmesh-core container chatmesh: livenessProbe port 9999 is not a declared containerPort/
		);
		// The core node runs no gateway: PORT opens nothing there even when declared.
		const wrongPort = mutate(o => {
			const c = container(o, "chatmesh-core");
			c.ports = [...(c.ports ?? []), { name: "http", containerPort: 3000 }];
			if (c.readinessProbe?.httpGet) c.readinessProbe.httpGet = { path: "/ready", port: "http" };
		});
		expect(checkProperties(wrongPort, APP, OUTSIDE).join("\n")).toMatch(
			/chatmesh-core container chatmesh: readinessProbe port 3000 is not opened by this node's configuration/
		);
	});

	it("a data directory on the read-only root filesystem", () => {
		const broken = mutate(o => {
			const c = container(o, "chatmesh-core");
			c.volumeMounts = [];
		});
		expect(checkProperties(broken, APP, OUTSIDE)).toContain(
			"Deployment chatmesh-core container chatmesh: DATA_DIR /tmp/chatmesh is not on a writable volume, and the root filesystem is read-only"
		);
	});

	it("a container without limits", () => {
		const broken = mutate(o => {
			const c = container(o, "chatmesh-llm");
			if (c.resources) delete c.resources.limits;
		});
		const problems = checkProperties(broken, APP, OUTSIDE);
		expect(problems).toContain("Deployment chatmesh-llm container chatmesh: no cpu limit (resources.limits.cpu)");
		expect(problems).toContain("Deployment chatmesh-llm container chatmesh: no memory limit (resources.limits.memory)");
	});

	it("a container that may run as root or escalate", () => {
		const broken = mutate(o => {
			const w = workloads(o).find(x => x.name === "chatmesh-core");
			if (!w) return;
			w.pod.securityContext = {};
			const c = w.pod.containers[0];
			c.securityContext = { readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } };
		});
		const problems = checkProperties(broken, APP, OUTSIDE);
		expect(problems).toContain("Deployment chatmesh-core container chatmesh: runAsNonRoot is not true");
		expect(problems).toContain("Deployment chatmesh-core container chatmesh: allowPrivilegeEscalation is not false");
	});

	it("a selector that misses its pods, a Service port nobody declares, an HPA on a missing Deployment", () => {
		const broken = mutate(o => {
			const gw = find(o, "Deployment", "chatmesh-gateway") as unknown as { spec: { selector: { matchLabels: Record<string, string> } } };
			gw.spec.selector.matchLabels["app.kubernetes.io/component"] = "gw";
			(find(o, "Service", "chatmesh-gateway").spec as { ports: Array<{ targetPort: string }> }).ports[0].targetPort = "web";
			(find(o, "HorizontalPodAutoscaler", "chatmesh-llm").spec as { scaleTargetRef: { name: string } }).scaleTargetRef.name = "chatmesh-llms";
		});
		const problems = checkProperties(broken, APP, OUTSIDE).join("\n");
		expect(problems).toMatch(/Deployment chatmesh-gateway: selector .* does not match its pod labels/);
		expect(problems).toMatch(/Service chatmesh-gateway: targetPort web is not declared by chatmesh-gateway/);
		expect(problems).toMatch(/HorizontalPodAutoscaler chatmesh-llm: target Deployment chatmesh-llms does not exist/);
	});

	it("a namespace without the default deny lets every pod no other policy selects take outside traffic", () => {
		const withoutDeny = (o: K8sObject[], names: string[]) => {
			for (const name of names)
				o.splice(
					o.findIndex(x => x.kind === "NetworkPolicy" && x.metadata.name === name),
					1
				);
		};
		// The metrics policy alone still isolates the chatmesh pods it selects.
		expect(
			admittedFromOutside(
				mutate(o => withoutDeny(o, ["chatmesh-default-deny-ingress"])),
				MONITORING
			)
		).toEqual(OUTSIDE);
		const broken = mutate(o => withoutDeny(o, ["chatmesh-default-deny-ingress", "chatmesh-metrics-from-monitoring"]));
		expect(admittedFromOutside(broken, MONITORING)).toEqual(ROLES);
		expect(checkProperties(broken, APP, OUTSIDE)).toContain("NetworkPolicy: chatmesh-core takes traffic from outside the namespace");
	});

	it("a scrape annotation naming a port the pod does not declare, or metrics on loopback", () => {
		const undeclared = mutate(o => {
			const w = workloads(o).find(x => x.name === "chatmesh-jobs");
			if (w) w.pod.containers[0].ports = w.pod.containers[0].ports?.filter(p => p.name !== "metrics");
		});
		expect(checkProperties(undeclared, APP, OUTSIDE)).toContain(
			"Deployment chatmesh-jobs: prometheus.io/port 3030 is not a declared containerPort of chatmesh"
		);
		const otherPort = mutate(o => {
			const template = (find(o, "Deployment", "chatmesh-llm").spec as { template: { metadata: { annotations: Record<string, string> } } }).template;
			template.metadata.annotations["prometheus.io/port"] = "9100";
		});
		expect(checkProperties(otherPort, APP, OUTSIDE)).toEqual(
			expect.arrayContaining([
				"Deployment chatmesh-llm: prometheus.io/port 9100 is not a declared containerPort of chatmesh",
				"Deployment chatmesh-llm: prometheus.io/port 9100 is not METRICS_PORT (3030)",
				"Deployment chatmesh-llm: no NetworkPolicy admits namespace monitoring to its metrics port"
			])
		);
		const loopback = mutate(o => {
			(find(o, "ConfigMap", "chatmesh-config").data as Record<string, string>).METRICS_HOST = "127.0.0.1";
		});
		expect(checkProperties(loopback, APP, OUTSIDE)).toContain("Deployment chatmesh-core: METRICS_HOST is 127.0.0.1, so the scraper cannot reach it");
	});

	it("a metrics policy open to every namespace, or to the monitoring namespace on every port", () => {
		const rule = (o: K8sObject[]) =>
			(find(o, "NetworkPolicy", "chatmesh-metrics-from-monitoring").spec as { ingress: Array<{ from?: unknown[]; ports?: unknown[] }> }).ingress[0];
		const anyNamespace = mutate(o => {
			rule(o).from = [{ namespaceSelector: {} }];
		});
		const problems = checkProperties(anyNamespace, APP, OUTSIDE);
		for (const name of ["chatmesh-core", "chatmesh-llm", "chatmesh-jobs"])
			expect(problems).toContain(`NetworkPolicy: ${name} takes traffic from outside the namespace`);
		expect(problems).toContain("Deployment chatmesh-jobs: no NetworkPolicy admits namespace monitoring to its metrics port");
		const everyPort = mutate(o => {
			delete rule(o).ports;
		});
		expect(checkProperties(everyPort, APP, OUTSIDE)).toContain("NetworkPolicy: chatmesh-jobs takes traffic from outside the namespace");
		expect(admittedFromOutside(everyPort, MONITORING)).toEqual(ROLES);
	});

	it("an object that breaks the schema", () => {
		const broken = mutate(o => {
			(find(o, "Deployment", "chatmesh-core").spec as { replicas: unknown }).replicas = "two";
		});
		expect(validateSchemas(broken)).toEqual(["Deployment chatmesh-core: data/spec/replicas must be integer"]);
	});
});

describe("kubectl kustomize, when installed, builds the same objects", () => {
	// The resolver above stands in for kustomize in CI; where kubectl exists it must agree with it.
	let kubectl = true;
	try {
		execFileSync("kubectl", ["version", "--client"], { stdio: "ignore" });
	} catch {
		kubectl = false;
	}
	it.each([BASE, DEV])("%s", async dir => {
		if (!kubectl) return;
		const { parseAllDocuments } = await import("yaml");
		const output = execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8" });
		const theirs = parseAllDocuments(output).map(d => d.toJS() as K8sObject);
		const key = (o: K8sObject) => `${o.kind}/${o.metadata.name}`;
		const sort = (list: K8sObject[]) => [...list].sort((a, b) => key(a).localeCompare(key(b)));
		expect(sort(buildKustomization(dir))).toEqual(sort(theirs));
	});
});
