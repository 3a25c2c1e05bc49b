/**
 * The deployment files checked without a container engine: docker-compose.yml through
 * `docker-compose config -q` and the properties it must have, nginx.conf through `nginx -t`,
 * prometheus.yml through `promtool check config`, Grafana's provisioning, and `.env.example`
 * against what chatmesh reads. Each check is also shown catching a broken file.
 */
import fs from "node:fs";
import path from "node:path";
import { parse, stringify } from "yaml";
import { afterAll, describe, expect, it } from "vitest";
import { assertNodeConfig, loadConfig, needsDatabase } from "../../lib/config";
import {
	chatmeshNodes,
	COMPOSE_FILE,
	composeProblems,
	composeProject,
	configVariables,
	envExampleVariables,
	filledEnvFile,
	GRAFANA_PROVISIONING,
	nginxDirectives,
	nginxPrefix,
	nginxTest,
	PROMETHEUS_CONFIG,
	rawCompose,
	resolvedCompose,
	removeTempDirs,
	runCommand,
	SECRET_VARIABLES,
	tempDir,
	type ComposeFile,
	unscrapedNodes
} from "./compose";

afterAll(removeTempDirs);

const LOCAL_GATEWAYS = { "gateway-1:3000": "127.0.0.1:39101", "gateway-2:3000": "127.0.0.1:39102" };

describe("docker-compose.yml", () => {
	it("passes `docker-compose config -q` with .env made from .env.example, and is refused while a secret is unset", async () => {
		const ok = await runCommand("docker-compose", ["config", "-q"], { cwd: composeProject(filledEnvFile()) });
		expect(ok.stderr).toBe("");
		expect(ok.code).toBe(0);

		// .env.example as it is: every secret empty, and compose names the one to set.
		const verbatim = await runCommand("docker-compose", ["config", "-q"], {
			cwd: composeProject(fs.readFileSync(path.join(path.dirname(COMPOSE_FILE), ".env.example"), "utf8"))
		});
		expect(verbatim.code).not.toBe(0);
		expect(verbatim.stderr).toMatch(/set (JWT_SECRET|POSTGRES_PASSWORD|REDIS_PASSWORD|GRAFANA_ADMIN_PASSWORD) in \.env/);
	});

	it("has the topology: nginx, two gateways, a core node, two llm nodes, two jobs workers, the simulator, the stores, NATS with JetStream, Prometheus, Grafana", async () => {
		const file = await resolvedCompose(composeProject(filledEnvFile()));
		expect(Object.keys(file.services).sort()).toEqual(
			[
				"core",
				"gateway-1",
				"gateway-2",
				"grafana",
				"jobs-1",
				"jobs-2",
				"llm-1",
				"llm-2",
				"nats",
				"nginx",
				"postgres",
				"prometheus",
				"redis",
				"simulator"
			].sort()
		);
		const roles = Object.fromEntries(chatmeshNodes(file).map(name => [name, file.services[name].environment?.SERVICES]));
		expect(roles).toEqual({
			"gateway-1": "gateway",
			"gateway-2": "gateway",
			core: "user,conversation,quota,moderation,tool",
			"llm-1": "llm",
			"llm-2": "llm",
			"jobs-1": "jobs",
			"jobs-2": "jobs"
		});
		expect(file.services.nats.command).toContain("-js");
		expect(file.services.simulator.command).toEqual(expect.arrayContaining(["node", "dist/simulator.js"]));
		// The llm nodes' default model server is the simulator service.
		const providers = JSON.parse(file.services["llm-1"].environment?.LLM_PROVIDERS ?? "[]") as Array<{ baseURL: string }>;
		expect(providers.map(p => p.baseURL)).toEqual(["http://simulator:8100/v1"]);
		// Only nginx is open to the world; Prometheus and Grafana answer on the host's loopback.
		const published = Object.entries(file.services).filter(([, s]) => s.ports?.length);
		expect(published.map(([name]) => name).sort()).toEqual(["grafana", "nginx", "prometheus"]);
		for (const name of ["grafana", "prometheus"])
			for (const port of file.services[name].ports ?? []) expect(typeof port === "string" ? port : port.host_ip).toMatch(/^127\.0\.0\.1/);
	});

	it("has a healthcheck on every service, service_healthy dependencies, named volumes, probes on /ready, and no secret written in it", async () => {
		const file = await resolvedCompose(composeProject(filledEnvFile()));
		expect(composeProblems(file, rawCompose())).toEqual([]);
		for (const store of ["postgres", "redis", "nats", "prometheus", "grafana"]) {
			const named = (file.services[store].volumes ?? []).map(v => (typeof v === "string" ? v.split(":")[0] : v.source));
			expect(named.some(source => source && file.volumes?.[source] !== undefined)).toBe(true);
		}
		// The gateways wait for the nodes whose readiness they report; nginx waits for the gateways.
		expect(Object.keys(file.services["gateway-1"].depends_on ?? {})).toEqual(expect.arrayContaining(["core", "llm-1", "llm-2"]));
		expect(Object.keys(file.services.nginx.depends_on ?? {}).sort()).toEqual(["gateway-1", "gateway-2"]);
		// The jobs workers keep their queue in PostgreSQL and wake on JetStream: they start once both are up.
		for (const name of ["jobs-1", "jobs-2"])
			expect(Object.keys(file.services[name].depends_on ?? {}), name).toEqual(expect.arrayContaining(["postgres", "redis", "nats"]));
	});

	it("gives every chatmesh node an environment chatmesh accepts as a cluster node", async () => {
		const file = await resolvedCompose(composeProject(filledEnvFile()));
		for (const name of chatmeshNodes(file)) {
			const env = Object.fromEntries(Object.entries(file.services[name].environment ?? {}).map(([k, v]) => [k, v ?? ""]));
			const config = loadConfig(env);
			expect(() => assertNodeConfig(config), name).not.toThrow();
			expect(config.nodeEnv, name).toBe("production");
			expect(config.transporter, name).toEqual(["nats://nats:4222"]);
			if (config.services.includes("gateway")) expect(config.trustProxy, name).toBe(true);
			// A node with a database service gets the compose PostgreSQL, and its /ready checks it.
			if (needsDatabase(config)) expect(config.databaseUrl, name).toMatch(/@postgres:5432\/chatmesh$/);
		}
		// The jobs workers read their settings from .env, blank meaning chatmesh's defaults.
		const jobsEnv = file.services["jobs-1"].environment ?? {};
		for (const name of configVariables().filter(v => v.startsWith("JOBS_") || v === "RETENTION_DAYS")) expect(jobsEnv, name).toHaveProperty(name, "");
		const jobs = loadConfig(Object.fromEntries(Object.entries(jobsEnv).map(([k, v]) => [k, v ?? ""])));
		expect(needsDatabase(jobs)).toBe(true);
		expect(jobs.jobs.concurrency).toBe(loadConfig({}).jobs.concurrency);
	});

	it("catches a service without a healthcheck, a dependency that does not wait for health, and a secret written in the file", async () => {
		const raw = rawCompose();
		const broken = structuredClone(raw) as ComposeFile;
		delete broken.services.redis.healthcheck;
		broken.services.core.depends_on = { postgres: { condition: "service_started" } };
		broken.services["gateway-2"].environment = { ...broken.services["gateway-2"].environment, JWT_SECRET: "a-literal-secret-in-the-compose-file-0123456789" };
		broken.services["llm-1"].healthcheck = { test: ["CMD", "node", "-e", "fetch('http://127.0.0.1:'+process.env.HEALTH_PORT+'/readyz')"] };
		broken.services["jobs-2"].environment = { ...broken.services["jobs-2"].environment, NODE_ID: "jobs-1" };
		const project = composeProject(filledEnvFile(), stringify(broken));
		// compose itself takes it: only the property checks see what is wrong.
		expect((await runCommand("docker-compose", ["config", "-q"], { cwd: project })).code).toBe(0);
		const problems = composeProblems(await resolvedCompose(project), broken);
		expect(problems).toEqual(
			expect.arrayContaining([
				"redis: no healthcheck",
				"core: depends_on postgres without condition service_healthy",
				"gateway-2: JWT_SECRET is a literal, not from .env",
				"llm-1: healthcheck must hit /ready on HEALTH_PORT",
				"NODE_ID values repeat: core-1, gateway-1, gateway-2, jobs-1, jobs-1, llm-1, llm-2"
			])
		);
		// And a file compose cannot read fails its own check.
		const invalid = composeProject(filledEnvFile(), fs.readFileSync(COMPOSE_FILE, "utf8").replace("restart: unless-stopped", "restart: [unless-stopped"));
		expect((await runCommand("docker-compose", ["config", "-q"], { cwd: invalid })).code).not.toBe(0);
	});
});

describe(".env.example", () => {
	it("lists every variable chatmesh reads, leaves every secret empty, and holds nothing docker-compose.yml does not use", () => {
		const { active, listed } = envExampleVariables();
		const read = configVariables();
		expect(read.length).toBeGreaterThan(30);
		expect(read.filter(name => !listed.has(name))).toEqual([]);
		for (const [name, value] of active) if (/SECRET|PASSWORD|TOKEN|API_KEY/.test(name)) expect(value, name).toBe("");
		for (const name of SECRET_VARIABLES) expect(active.has(name), name).toBe(true);
		expect(active.get("LLM_PROVIDERS")).not.toMatch(/apiKey/);
		const compose = fs.readFileSync(COMPOSE_FILE, "utf8");
		expect([...active.keys()].filter(name => !compose.includes(`\${${name}`))).toEqual([]);
	});
});

describe("deploy/nginx", () => {
	it("passes `nginx -t` with its gateways pointed at local addresses, and fails it with a syntax error", async () => {
		const ok = await nginxTest(nginxPrefix(LOCAL_GATEWAYS, 39100));
		expect(ok.stderr).toMatch(/test is successful/);
		expect(ok.code).toBe(0);

		const conf = fs
			.readFileSync(path.join(path.dirname(COMPOSE_FILE), "deploy/nginx/nginx.conf"), "utf8")
			.replace("proxy_buffering off;", "proxy_buffering off");
		const broken = await nginxTest(nginxPrefix(LOCAL_GATEWAYS, 39100, { nginxConf: conf }));
		expect(broken.code).not.toBe(0);
		expect(broken.stderr).toMatch(/emerg/);
	});

	it("upgrades WebSockets, streams unbuffered with long timeouts, passes a request id and the client's address, and keeps a client on its gateway", () => {
		const conf = nginxDirectives();
		expect(conf).toMatch(/proxy_http_version 1\.1;/);
		expect(conf).toMatch(/proxy_set_header Upgrade \$http_upgrade;/);
		expect(conf).toMatch(/proxy_set_header Connection \$connection_upgrade;/);
		expect(conf).toMatch(/proxy_buffering off;/);
		expect(conf).toMatch(/proxy_pass_header X-Accel-Buffering;/);
		expect(conf).toMatch(/gzip off;/);
		const readTimeout = /proxy_read_timeout (\d+)([smh]);/.exec(conf);
		expect(readTimeout).not.toBeNull();
		const seconds = Number(readTimeout?.[1]) * { s: 1, m: 60, h: 3600 }[readTimeout?.[2] as "s" | "m" | "h"];
		expect(seconds).toBeGreaterThanOrEqual(600);
		expect(conf).toMatch(/proxy_set_header X-Request-Id \$chatmesh_request_id;/);
		expect(conf).toMatch(/default \$request_id;/);
		// Replaced with the peer's address: appending would let a client pick its own rate-limit key.
		expect(conf).toMatch(/proxy_set_header X-Forwarded-For \$remote_addr;/);
		expect(conf).toMatch(/proxy_pass http:\/\/\$chatmesh_route;/);
		expect(conf).toMatch(/add_header Set-Cookie "chatmesh_gw=\$chatmesh_route;/);
	});

	it("gives each gateway replica its group with the other as backup, so compose's two gateways are both behind it", () => {
		const upstreams = nginxDirectives(fs.readFileSync(path.join(path.dirname(COMPOSE_FILE), "deploy/nginx/gateways.conf"), "utf8"));
		for (const [own, other] of [
			["gateway-1", "gateway-2"],
			["gateway-2", "gateway-1"]
		]) {
			const group = new RegExp(`upstream gateway_${own.slice(-1)} \\{[^}]*server ${own}:3000[^;]*;[^}]*server ${other}:3000 backup;`);
			expect(upstreams).toMatch(group);
		}
	});
});

describe("deploy/prometheus and deploy/grafana", () => {
	it("passes `promtool check config`, scrapes every chatmesh node on its metrics port, and fails the check when broken", async () => {
		const ok = await runCommand("promtool", ["check", "config", PROMETHEUS_CONFIG]);
		expect(ok.code, ok.stderr + ok.stdout).toBe(0);

		const file = await resolvedCompose(composeProject(filledEnvFile()));
		const prometheusText = fs.readFileSync(PROMETHEUS_CONFIG, "utf8");
		expect(unscrapedNodes(file, prometheusText)).toEqual([]);
		// A node left out of the scrape targets (here both jobs workers) is named.
		expect(unscrapedNodes(file, prometheusText.replace('"jobs-1:3030", "jobs-2:3030"', ""))).toEqual(["jobs-1:3030", "jobs-2:3030"]);
		// The mounted directory is where prometheus.yml lives in the container.
		expect(file.services.prometheus.command).toContain("--config.file=/etc/prometheus/prometheus.yml");

		const broken = path.join(tempDir("prometheus"), "prometheus.yml");
		fs.writeFileSync(broken, fs.readFileSync(PROMETHEUS_CONFIG, "utf8").replace("scrape_interval: 15s", "scrape_interval: fifteen"));
		expect((await runCommand("promtool", ["check", "config", broken])).code).not.toBe(0);
	});

	it("provisions Grafana with the compose Prometheus as data source and the dashboards directory compose mounts", async () => {
		const file = await resolvedCompose(composeProject(filledEnvFile()));
		const datasources = parse(fs.readFileSync(path.join(GRAFANA_PROVISIONING, "datasources/prometheus.yml"), "utf8")) as {
			datasources: Array<{ type: string; url: string; uid: string }>;
		};
		expect(datasources.datasources).toEqual([expect.objectContaining({ type: "prometheus", url: "http://prometheus:9090", uid: "prometheus" })]);
		const dashboards = parse(fs.readFileSync(path.join(GRAFANA_PROVISIONING, "dashboards/chatmesh.yml"), "utf8")) as {
			providers: Array<{ type: string; options: { path: string } }>;
		};
		const mounts = (file.services.grafana.volumes ?? []).map(v => (typeof v === "string" ? { source: v.split(":")[0], target: v.split(":")[1] } : v));
		const dashboardMount = mounts.find(m => m.source?.endsWith("deploy/grafana/dashboards"));
		expect(dashboards.providers[0]).toMatchObject({ type: "file", options: { path: dashboardMount?.target } });
		expect(mounts.find(m => m.source?.endsWith("deploy/grafana/provisioning"))?.target).toBe("/etc/grafana/provisioning");
	});
});
