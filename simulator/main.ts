/**
 * Runs the inference simulator on its own: `npm run simulator -- --port 8100 --ttft-ms 200`.
 * Prints one line with its URL, stops cleanly on SIGINT/SIGTERM.
 */
import { parseArgs } from "node:util";
import { startSimulator, type SimulatorHandle, type SimulatorOptions } from "./simulator";
import { SimulatorConfigError } from "./options";

const USAGE = `Usage: npm run simulator -- [options]

  --port <n>                  port to listen on (default 8100; 0 picks a free one)
  --host <addr>               address to bind (default 127.0.0.1)
  --models <a,b,c>            served model ids (default sim-small,sim-medium,sim-large)
  --output-tokens <n>         answer length in tokens (default 24)
  --ttft-ms <ms>              delay before the first token (default 0)
  --token-interval-ms <ms>    gap between tokens (default 0)
  --error-status <code>       status of injected errors (alone: every request fails)
  --error-rate <0..1>         fraction of chat requests that fail
  --hang                      never finish chat answers
  --hang-after-tokens <n>     stop producing after n tokens
  --flagged-words <a,b>       words moderation flags (default simflagged)
  --api-key <key>             require "Authorization: Bearer <key>" on /v1/*
  --embedding-dimensions <n>  default embedding length (default 64)
  -h, --help                  show this help
`;

function numberFlag(name: string, raw: string | undefined): number | undefined {
	if (raw === undefined) return undefined;
	const value = Number(raw);
	if (raw.trim() === "" || !Number.isFinite(value)) throw new SimulatorConfigError(name, `--${name} expects a number, got "${raw}"`);
	return value;
}

function listFlag(raw: string | undefined): string[] | undefined {
	if (raw === undefined) return undefined;
	return raw
		.split(",")
		.map(s => s.trim())
		.filter(s => s.length > 0);
}

function parseOptions(argv: string[]): Partial<SimulatorOptions> | "help" {
	const { values } = parseArgs({
		args: argv,
		strict: true,
		allowPositionals: false,
		options: {
			port: { type: "string" },
			host: { type: "string" },
			models: { type: "string" },
			"output-tokens": { type: "string" },
			"ttft-ms": { type: "string" },
			"token-interval-ms": { type: "string" },
			"error-status": { type: "string" },
			"error-rate": { type: "string" },
			hang: { type: "boolean" },
			"hang-after-tokens": { type: "string" },
			"flagged-words": { type: "string" },
			"api-key": { type: "string" },
			"embedding-dimensions": { type: "string" },
			help: { type: "boolean", short: "h" }
		}
	});
	if (values.help) return "help";
	const options: Partial<SimulatorOptions> = {
		host: values.host ?? "127.0.0.1",
		port: numberFlag("port", values.port) ?? 8100,
		models: listFlag(values.models),
		outputTokens: numberFlag("output-tokens", values["output-tokens"]),
		ttftMs: numberFlag("ttft-ms", values["ttft-ms"]),
		tokenIntervalMs: numberFlag("token-interval-ms", values["token-interval-ms"]),
		errorStatus: numberFlag("error-status", values["error-status"]),
		errorRate: numberFlag("error-rate", values["error-rate"]),
		hang: values.hang,
		hangAfterTokens: numberFlag("hang-after-tokens", values["hang-after-tokens"]),
		flaggedWords: listFlag(values["flagged-words"]),
		apiKey: values["api-key"],
		embeddingDimensions: numberFlag("embedding-dimensions", values["embedding-dimensions"])
	};
	for (const key of Object.keys(options) as (keyof SimulatorOptions)[]) {
		if (options[key] === undefined) delete options[key];
	}
	return options;
}

async function main(): Promise<void> {
	let options: Partial<SimulatorOptions> | "help";
	try {
		options = parseOptions(process.argv.slice(2));
	} catch (error) {
		process.stderr.write(`${error instanceof Error ? error.message : String(error)}\n\n${USAGE}`);
		process.exitCode = 2;
		return;
	}
	if (options === "help") {
		process.stdout.write(USAGE);
		return;
	}

	let handle: SimulatorHandle;
	try {
		handle = await startSimulator(options);
	} catch (error) {
		process.stderr.write(`simulator failed to start: ${error instanceof Error ? error.message : String(error)}\n`);
		process.exitCode = 1;
		return;
	}
	process.stdout.write(`chatmesh inference simulator listening on ${handle.url} (OpenAI base URL ${handle.baseURL})\n`);

	let stopping = false;
	const stop = (signal: NodeJS.Signals) => {
		if (stopping) return;
		stopping = true;
		handle.close().then(
			() => {
				process.stdout.write(`simulator stopped (${signal})\n`);
				process.exitCode = 0;
			},
			(error: unknown) => {
				process.stderr.write(`simulator failed to stop cleanly: ${String(error)}\n`);
				process.exitCode = 1;
			}
		);
	};
	process.once("SIGINT", stop);
	process.once("SIGTERM", stop);
}

void main();
