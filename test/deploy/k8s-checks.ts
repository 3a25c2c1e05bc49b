/**
 * Checks of the Kubernetes manifests in k8s/, with no cluster: loading the YAML, building a
 * kustomization (the subset k8s/ uses: resources, namespace, strategic-merge patches by path),
 * validating each object against the Kubernetes schemas (kubernetes-models), and the properties
 * chatmesh's deployment depends on. Each check returns the problems it found, as sentences; an
 * empty list means the manifests pass. Used by test/deploy/k8s.test.ts on the real manifests and
 * on broken copies of them.
 */
import fs from "node:fs";
import path from "node:path";
import { Namespace, ConfigMap, Secret, Service } from "kubernetes-models/v1";
import { Deployment } from "kubernetes-models/apps/v1";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";
import { Ingress, NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { parseAllDocuments } from "yaml";

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

export interface K8sObject extends JsonObject {
	apiVersion: string;
	kind: string;
	metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> } & JsonObject;
}

// ---------------------------------------------------------------------------------------------
// Loading and kustomize

export function loadYamlFile(file: string): K8sObject[] {
	const docs = parseAllDocuments(fs.readFileSync(file, "utf8"));
	const objects: K8sObject[] = [];
	for (const doc of docs) {
		if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map(e => e.message).join("; ")}`);
		const value = doc.toJS() as K8sObject | null;
		if (value !== null) objects.push(value);
	}
	return objects;
}

interface Kustomization {
	apiVersion?: string;
	kind?: string;
	namespace?: string;
	resources?: string[];
	patches?: Array<{ path?: string; patch?: string; target?: unknown }>;
}

const SUPPORTED_KUSTOMIZATION_FIELDS = new Set(["apiVersion", "kind", "namespace", "resources", "patches"]);
/** Kinds that live outside any namespace (of those k8s/ uses). */
const CLUSTER_SCOPED = new Set(["Namespace"]);

/**
 * Builds the kustomization in `dir` as `kubectl kustomize` would for the features k8s/ uses;
 * anything else in a kustomization.yaml is refused rather than silently ignored.
 */
export function buildKustomization(dir: string): K8sObject[] {
	const file = path.join(dir, "kustomization.yaml");
	const [k] = loadYamlFile(file) as unknown as Kustomization[];
	for (const key of Object.keys(k)) if (!SUPPORTED_KUSTOMIZATION_FIELDS.has(key)) throw new Error(`${file}: field ${key} is not supported by this resolver`);
	let objects: K8sObject[] = [];
	for (const resource of k.resources ?? []) {
		const target = path.resolve(dir, resource);
		objects.push(...(fs.statSync(target).isDirectory() ? buildKustomization(target) : loadYamlFile(target)));
	}
	for (const patch of k.patches ?? []) {
		if (!patch.path || patch.patch !== undefined || patch.target !== undefined)
			throw new Error(`${file}: only strategic-merge patches given by path are supported`);
		for (const p of loadYamlFile(path.resolve(dir, patch.path))) {
			const index = objects.findIndex(o => o.kind === p.kind && o.metadata.name === p.metadata.name && group(o.apiVersion) === group(p.apiVersion));
			if (index < 0) throw new Error(`${file}: patch ${patch.path} matches no ${p.kind} ${p.metadata.name}`);
			objects[index] = strategicMerge(objects[index], p) as K8sObject;
		}
	}
	const namespace = k.namespace;
	if (namespace) objects = objects.map(o => (CLUSTER_SCOPED.has(o.kind) ? o : { ...o, metadata: { ...o.metadata, namespace } }));
	return objects;
}

const group = (apiVersion: string) => (apiVersion.includes("/") ? apiVersion.split("/")[0] : "");

const isObject = (v: Json | undefined): v is JsonObject => typeof v === "object" && v !== null && !Array.isArray(v);

/** Strategic merge as kustomize applies it to these kinds: maps merge, lists of named items merge by name, other lists are replaced. */
export function strategicMerge(base: Json, patch: Json): Json {
	if (isObject(base) && isObject(patch)) {
		const out: JsonObject = { ...base };
		for (const [key, value] of Object.entries(patch)) out[key] = key in base ? strategicMerge(base[key], value) : value;
		return out;
	}
	if (Array.isArray(base) && Array.isArray(patch) && patch.every(i => isObject(i) && typeof i.name === "string")) {
		const out = [...base];
		for (const item of patch as JsonObject[]) {
			const at = out.findIndex(b => isObject(b) && b.name === item.name);
			if (at >= 0) out[at] = strategicMerge(out[at], item);
			else out.push(item);
		}
		return out;
	}
	return patch;
}

// ---------------------------------------------------------------------------------------------
// Schemas

type Model = new (data: never) => { validate(): void };
const MODELS: Record<string, Model> = {
	"v1/Namespace": Namespace,
	"v1/ConfigMap": ConfigMap,
	"v1/Secret": Secret,
	"v1/Service": Service,
	"apps/v1/Deployment": Deployment,
	"autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler,
	"policy/v1/PodDisruptionBudget": PodDisruptionBudget,
	"networking.k8s.io/v1/Ingress": Ingress,
	"networking.k8s.io/v1/NetworkPolicy": NetworkPolicy
};

const describe = (o: K8sObject) => `${o.kind} ${o.metadata?.name ?? "(no name)"}`;

/** Each object against the schema of its apiVersion and kind. */
export function validateSchemas(objects: K8sObject[]): string[] {
	const problems: string[] = [];
	for (const o of objects) {
		const Model = MODELS[`${o.apiVersion}/${o.kind}`];
		if (!Model) {
			problems.push(`${describe(o)}: no schema for ${o.apiVersion} ${o.kind} (unknown or unsupported kind)`);
			continue;
		}
		try {
			new Model(structuredClone(o) as never).validate();
		} catch (err) {
			problems.push(`${describe(o)}: ${(err as Error).message}`);
		}
	}
	return problems;
}

// ---------------------------------------------------------------------------------------------
// Properties

/** What the application really serves: per port variable, the liveness and readiness paths. */
export interface AppEndpoints {
	/** e.g. { PORT: { live: "/health", ready: "/ready", roles: ["gateway"] }, HEALTH_PORT: { … } } */
	ports: Record<string, { live: string; ready: string /** Services a node must run to serve it; empty: any node. */; needs: string[] }>;
	/** The chatmesh containers, by image name (without tag). */
	image: string;
	/** Every service name, for SERVICES unset or "*". */
	allServices: string[];
	/** Where a node serves Prometheus metrics (METRICS_PORT, METRICS_HOST) and from which namespace they are scraped. */
	metrics: { portVariable: string; hostVariable: string; path: string; monitoringNamespace: string };
}

interface ContainerPort {
	name?: string;
	containerPort: number;
}
interface EnvVar {
	name: string;
	value?: string;
}
interface Probe {
	httpGet?: { path?: string; port: number | string };
	exec?: { command: string[] };
	tcpSocket?: { port: number | string };
}
interface Container {
	name: string;
	image: string;
	args?: string[];
	ports?: ContainerPort[];
	env?: EnvVar[];
	envFrom?: Array<{ configMapRef?: { name: string }; secretRef?: { name: string } }>;
	livenessProbe?: Probe;
	readinessProbe?: Probe;
	startupProbe?: Probe;
	resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
	securityContext?: {
		runAsNonRoot?: boolean;
		runAsUser?: number;
		allowPrivilegeEscalation?: boolean;
		readOnlyRootFilesystem?: boolean;
		privileged?: boolean;
		capabilities?: { drop?: string[]; add?: string[] };
	};
	volumeMounts?: Array<{ name: string; mountPath: string }>;
}
interface PodSpec {
	containers: Container[];
	initContainers?: Container[];
	securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
	volumes?: Array<{ name: string }>;
}
interface Workload {
	object: K8sObject;
	name: string;
	selector: Record<string, string>;
	podLabels: Record<string, string>;
	podAnnotations: Record<string, string>;
	pod: PodSpec;
}

const get = <T>(o: unknown, ...keys: string[]): T | undefined => {
	let v: unknown = o;
	for (const k of keys) v = v && typeof v === "object" ? (v as Record<string, unknown>)[k] : undefined;
	return v as T | undefined;
};

export function workloads(objects: K8sObject[]): Workload[] {
	return objects
		.filter(o => o.kind === "Deployment" || o.kind === "StatefulSet")
		.map(o => ({
			object: o,
			name: o.metadata.name,
			selector: get<Record<string, string>>(o, "spec", "selector", "matchLabels") ?? {},
			podLabels: get<Record<string, string>>(o, "spec", "template", "metadata", "labels") ?? {},
			podAnnotations: get<Record<string, string>>(o, "spec", "template", "metadata", "annotations") ?? {},
			pod: get<PodSpec>(o, "spec", "template", "spec") ?? { containers: [] }
		}));
}

const matches = (selector: Record<string, string>, labels: Record<string, string>) =>
	Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);

/** A container's environment as the kubelet assembles it: envFrom ConfigMaps, then env. */
function environment(c: Container, objects: K8sObject[]): Map<string, string> {
	const env = new Map<string, string>();
	for (const from of c.envFrom ?? []) {
		const name = from.configMapRef?.name;
		if (!name) continue;
		const cm = objects.find(o => o.kind === "ConfigMap" && o.metadata.name === name);
		for (const [k, v] of Object.entries(get<Record<string, string>>(cm, "data") ?? {})) env.set(k, String(v));
	}
	for (const e of c.env ?? []) if (e.value !== undefined) env.set(e.name, e.value);
	return env;
}

function resolvePort(c: Container, port: number | string): number | undefined {
	if (typeof port === "number") return c.ports?.some(p => p.containerPort === port) ? port : undefined;
	return c.ports?.find(p => p.name === port)?.containerPort;
}

/** Requests and limits, non-root, probes of every container of every workload. */
function checkContainers(objects: K8sObject[], app: AppEndpoints): string[] {
	const problems: string[] = [];
	for (const w of workloads(objects)) {
		if (!matches(w.selector, w.podLabels)) problems.push(`Deployment ${w.name}: selector ${JSON.stringify(w.selector)} does not match its pod labels`);
		const podUser = w.pod.securityContext?.runAsUser;
		for (const c of [...w.pod.containers, ...(w.pod.initContainers ?? [])]) {
			const where = `Deployment ${w.name} container ${c.name}`;
			for (const kind of ["requests", "limits"] as const)
				for (const resource of ["cpu", "memory"])
					if (!c.resources?.[kind]?.[resource])
						problems.push(`${where}: no ${resource} ${kind === "limits" ? "limit" : "request"} (resources.${kind}.${resource})`);

			const sc = c.securityContext ?? {};
			if (!(sc.runAsNonRoot ?? w.pod.securityContext?.runAsNonRoot)) problems.push(`${where}: runAsNonRoot is not true`);
			if ((sc.runAsUser ?? podUser) === 0) problems.push(`${where}: runs as uid 0`);
			if (sc.allowPrivilegeEscalation !== false) problems.push(`${where}: allowPrivilegeEscalation is not false`);
			if (sc.readOnlyRootFilesystem !== true) problems.push(`${where}: readOnlyRootFilesystem is not true`);
			if (sc.privileged) problems.push(`${where}: privileged`);
			if (!sc.capabilities?.drop?.includes("ALL")) problems.push(`${where}: capabilities do not drop ALL`);
			if (sc.capabilities?.add?.length) problems.push(`${where}: adds capabilities ${sc.capabilities.add.join(", ")}`);
			for (const m of c.volumeMounts ?? []) if (!w.pod.volumes?.some(v => v.name === m.name)) problems.push(`${where}: mounts undeclared volume ${m.name}`);

			const isApp = c.image.split(":")[0] === app.image;
			if (isApp && sc.readOnlyRootFilesystem) {
				// chatmesh writes only under DATA_DIR (the embedded database, a generated JWT secret).
				const dataDir = environment(c, objects).get("DATA_DIR");
				const mounts = (c.volumeMounts ?? []).map(m => m.mountPath.replace(/\/$/, ""));
				if (!dataDir || !mounts.some(m => dataDir === m || dataDir.startsWith(`${m}/`)))
					problems.push(`${where}: DATA_DIR ${dataDir ?? "(unset: ./data)"} is not on a writable volume, and the root filesystem is read-only`);
			}
			for (const probeName of ["startupProbe", "livenessProbe", "readinessProbe"] as const) {
				const probe = c[probeName];
				if (!probe) {
					problems.push(`${where}: no ${probeName}`);
					continue;
				}
				const port = probe.httpGet?.port ?? probe.tcpSocket?.port;
				if (port !== undefined && resolvePort(c, port) === undefined) problems.push(`${where}: ${probeName} port ${port} is not a declared containerPort`);
				if (isApp) problems.push(...checkAppProbe(where, c, probeName, probe, objects, app));
			}
		}
	}
	return problems;
}

/** A chatmesh probe: an HTTP GET on a port its configuration opens, at the path served there for that probe. */
function checkAppProbe(where: string, c: Container, probeName: string, probe: Probe, objects: K8sObject[], app: AppEndpoints): string[] {
	if (!probe.httpGet) return [`${where}: ${probeName} is not an HTTP GET`];
	const port = resolvePort(c, probe.httpGet.port);
	if (port === undefined) return [];
	const env = environment(c, objects);
	const raw = env.get("SERVICES");
	const services = raw === undefined || raw === "*" || raw === "all" ? app.allServices : raw.split(",").map(s => s.trim());
	const variable = Object.keys(app.ports).find(v => env.get(v) === String(port) && app.ports[v].needs.every(s => services.includes(s)));
	if (!variable)
		return [
			`${where}: ${probeName} port ${port} is not opened by this node's configuration (${Object.keys(app.ports).join(" or ")} with SERVICES=${raw ?? "*"})`
		];
	const expected = probeName === "readinessProbe" ? app.ports[variable].ready : app.ports[variable].live;
	if (probe.httpGet.path !== expected)
		return [`${where}: ${probeName} path ${probe.httpGet.path} is not what chatmesh serves for it on ${variable} (${expected})`];
	return [];
}

/** Services select pods and target ports those pods declare; HPAs and PDBs point at what exists. */
function checkReferences(objects: K8sObject[]): string[] {
	const problems: string[] = [];
	const all = workloads(objects);
	for (const s of objects.filter(o => o.kind === "Service")) {
		const selector = get<Record<string, string>>(s, "spec", "selector") ?? {};
		const selected = all.filter(w => matches(selector, w.podLabels));
		if (selected.length === 0) {
			problems.push(`Service ${s.metadata.name}: selector ${JSON.stringify(selector)} matches no pods`);
			continue;
		}
		for (const p of get<Array<{ port: number; targetPort?: number | string }>>(s, "spec", "ports") ?? []) {
			const target = p.targetPort ?? p.port;
			for (const w of selected)
				if (!w.pod.containers.some(c => resolvePort(c, target) !== undefined))
					problems.push(`Service ${s.metadata.name}: targetPort ${target} is not declared by ${w.name}`);
		}
	}
	for (const h of objects.filter(o => o.kind === "HorizontalPodAutoscaler")) {
		const ref = get<{ kind: string; name: string }>(h, "spec", "scaleTargetRef");
		const target = all.find(w => w.object.kind === ref?.kind && w.name === ref?.name);
		if (!target) problems.push(`HorizontalPodAutoscaler ${h.metadata.name}: target ${ref?.kind} ${ref?.name} does not exist`);
		else if (target.pod.containers.some(c => !c.resources?.requests?.cpu))
			problems.push(`HorizontalPodAutoscaler ${h.metadata.name}: ${target.name} has a container without a cpu request (utilization is undefined)`);
	}
	for (const p of objects.filter(o => o.kind === "PodDisruptionBudget")) {
		const selector = get<Record<string, string>>(p, "spec", "selector", "matchLabels") ?? {};
		if (!all.some(w => matches(selector, w.podLabels))) problems.push(`PodDisruptionBudget ${p.metadata.name}: selector matches no pods`);
	}
	for (const i of objects.filter(o => o.kind === "Ingress")) {
		const backends = (
			get<Array<{ http?: { paths: Array<{ backend: { service: { name: string; port: { name?: string; number?: number } } } }> } }>>(i, "spec", "rules") ?? []
		).flatMap(r => r.http?.paths ?? []);
		for (const { backend } of backends) {
			const svc = objects.find(o => o.kind === "Service" && o.metadata.name === backend.service.name);
			const ports = get<Array<{ name?: string; port: number }>>(svc, "spec", "ports") ?? [];
			if (!svc) problems.push(`Ingress ${i.metadata.name}: backend Service ${backend.service.name} does not exist`);
			else if (!ports.some(p => p.name === backend.service.port.name || p.port === backend.service.port.number))
				problems.push(`Ingress ${i.metadata.name}: Service ${backend.service.name} has no port ${backend.service.port.name ?? backend.service.port.number}`);
		}
	}
	const namespaces = objects.filter(o => o.kind === "Namespace").map(o => o.metadata.name);
	for (const o of objects)
		if (!CLUSTER_SCOPED.has(o.kind) && (!o.metadata.namespace || !namespaces.includes(o.metadata.namespace)))
			problems.push(`${describe(o)}: namespace ${o.metadata.namespace ?? "(none)"} is not one the manifests create`);
	return problems;
}

interface PolicyPeer {
	podSelector?: JsonObject;
	namespaceSelector?: JsonObject;
	ipBlock?: JsonObject;
}

interface PolicyRule {
	from?: PolicyPeer[];
	ports?: Array<{ port?: number | string; protocol?: string }>;
}

/**
 * The one outside traffic a chatmesh pod may take besides the gateway's: Prometheus scraping its
 * metrics port, from the monitoring namespace only (every peer exactly that namespace, every port
 * the metrics one: a name resolved against the pod's container ports).
 */
export function isMetricsScrapeRule(rule: PolicyRule, metrics: { monitoringNamespace: string; port: number; pod: PodSpec }): boolean {
	const peers = rule.from ?? [];
	const ports = rule.ports ?? [];
	const monitoringOnly = (peer: PolicyPeer) => {
		if (peer.ipBlock !== undefined || peer.podSelector !== undefined || !isObject(peer.namespaceSelector)) return false;
		const { matchLabels, ...rest } = peer.namespaceSelector as { matchLabels?: Record<string, string> };
		return Object.keys(rest).length === 0 && JSON.stringify(matchLabels) === JSON.stringify({ "kubernetes.io/metadata.name": metrics.monitoringNamespace });
	};
	const resolve = (port: number | string | undefined) =>
		typeof port === "string" ? metrics.pod.containers.flatMap(c => c.ports ?? []).find(p => p.name === port)?.containerPort : port;
	return peers.length > 0 && peers.every(monitoringOnly) && ports.length > 0 && ports.every(p => resolve(p.port) === metrics.port);
}

/** The metrics port a pod's prometheus.io/port annotation names, when it names one. */
const annotatedMetricsPort = (w: Workload) => {
	const port = Number(w.podAnnotations["prometheus.io/port"]);
	return Number.isInteger(port) && port > 0 ? port : undefined;
};

function ingressPolicies(objects: K8sObject[]): K8sObject[] {
	return objects.filter(o => o.kind === "NetworkPolicy" && (get<string[]>(o, "spec", "policyTypes") ?? ["Ingress"]).includes("Ingress"));
}

/** Whether a NetworkPolicy's podSelector selects pods with these labels. */
function policySelects(policy: K8sObject, labels: Record<string, string>): boolean {
	const selector =
		get<{ matchLabels?: Record<string, string>; matchExpressions?: Array<{ key: string; operator: string; values?: string[] }> }>(
			policy,
			"spec",
			"podSelector"
		) ?? {};
	const byLabels = Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
	const byExpressions = (selector.matchExpressions ?? []).every(e => {
		if (e.operator === "In") return (e.values ?? []).includes(labels[e.key]);
		if (e.operator === "NotIn") return !(e.values ?? []).includes(labels[e.key]);
		if (e.operator === "Exists") return e.key in labels;
		if (e.operator === "DoesNotExist") return !(e.key in labels);
		return false;
	});
	return byLabels && byExpressions;
}

/** The ingress rules of every policy that selects a workload's pods; undefined when none does (all is let in). */
function rulesFor(objects: K8sObject[], w: Workload): PolicyRule[] | undefined {
	const applying = ingressPolicies(objects).filter(p => policySelects(p, w.podLabels));
	if (applying.length === 0) return undefined;
	return applying.flatMap(p => get<PolicyRule[]>(p, "spec", "ingress") ?? []);
}

/**
 * Workloads whose pods NetworkPolicies let take connections from outside the namespace. Given
 * `monitoringNamespace`, a rule that admits only that namespace to a pod's annotated metrics
 * port does not count (isMetricsScrapeRule).
 */
export function admittedFromOutside(objects: K8sObject[], monitoringNamespace?: string): string[] {
	// A peer is inside only when it is a pod selector of this namespace.
	const outsidePeer = (peer: PolicyPeer) => peer.ipBlock !== undefined || peer.namespaceSelector !== undefined || peer.podSelector === undefined;
	return workloads(objects)
		.filter(w => {
			const rules = rulesFor(objects, w);
			if (rules === undefined) return true;
			const port = annotatedMetricsPort(w);
			const scrape = (rule: PolicyRule) =>
				monitoringNamespace !== undefined && port !== undefined && isMetricsScrapeRule(rule, { monitoringNamespace, port, pod: w.pod });
			return rules.some(rule => !scrape(rule) && (!rule.from || rule.from.length === 0 || rule.from.some(outsidePeer)));
		})
		.map(w => w.name);
}

/**
 * Prometheus scraping of every chatmesh pod: `prometheus.io/scrape: "true"`, a `prometheus.io/port`
 * that the chatmesh container declares as containerPort `metrics` and that its configuration opens
 * on every interface (METRICS_PORT, METRICS_HOST), the path chatmesh serves, and a NetworkPolicy
 * rule admitting the monitoring namespace to that port.
 */
function checkMetrics(objects: K8sObject[], app: AppEndpoints): string[] {
	const problems: string[] = [];
	const { metrics } = app;
	for (const w of workloads(objects)) {
		const c = w.pod.containers.find(x => x.image.split(":")[0] === app.image);
		if (!c) continue;
		const where = `Deployment ${w.name}`;
		const a = w.podAnnotations;
		if (a["prometheus.io/scrape"] !== "true") problems.push(`${where}: pod annotation prometheus.io/scrape is not "true"`);
		if (a["prometheus.io/path"] !== metrics.path)
			problems.push(`${where}: pod annotation prometheus.io/path ${a["prometheus.io/path"]} is not ${metrics.path}`);
		const port = annotatedMetricsPort(w);
		if (port === undefined) {
			problems.push(`${where}: pod annotation prometheus.io/port ${a["prometheus.io/port"]} is not a port number`);
			continue;
		}
		const declared = c.ports?.find(p => p.containerPort === port);
		if (!declared) problems.push(`${where}: prometheus.io/port ${port} is not a declared containerPort of ${c.name}`);
		else if (declared.name !== "metrics") problems.push(`${where}: containerPort ${port} is named ${declared.name ?? "(none)"}, not metrics`);
		const env = environment(c, objects);
		if (env.get(metrics.portVariable) !== String(port))
			problems.push(`${where}: prometheus.io/port ${port} is not ${metrics.portVariable} (${env.get(metrics.portVariable) ?? "unset: no metrics listener"})`);
		if (env.get(metrics.hostVariable) !== "0.0.0.0")
			problems.push(`${where}: ${metrics.hostVariable} is ${env.get(metrics.hostVariable) ?? "unset (loopback)"}, so the scraper cannot reach it`);
		const rules = rulesFor(objects, w);
		if (rules !== undefined && !rules.some(rule => isMetricsScrapeRule(rule, { monitoringNamespace: metrics.monitoringNamespace, port, pod: w.pod })))
			problems.push(`${where}: no NetworkPolicy admits namespace ${metrics.monitoringNamespace} to its metrics port`);
	}
	return problems;
}

/** Every property check, on a built kustomization. */
export function checkProperties(objects: K8sObject[], app: AppEndpoints, expectOutside: string[]): string[] {
	const problems = [...checkContainers(objects, app), ...checkReferences(objects), ...checkMetrics(objects, app)];
	const outside = admittedFromOutside(objects, app.metrics.monitoringNamespace);
	for (const name of outside) if (!expectOutside.includes(name)) problems.push(`NetworkPolicy: ${name} takes traffic from outside the namespace`);
	return problems;
}
