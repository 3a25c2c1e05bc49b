/**
 * llm: the model providers behind chatmesh. Each provider is any OpenAI-compatible endpoint,
 * reached with the official SDK; with none configured the node runs the built-in simulator.
 */
import type { ServiceSchema } from "moleculer";
import { runtimeOf } from "../../lib/runtime";
import { createProviders, type Provider } from "./providers";

export interface ProviderHealth {
	name: string;
	ok: boolean;
	/** Models the endpoint listed, when it answered. */
	models: string[];
	error?: string;
	durationMs: number;
}

export interface ModelInfo {
	id: string;
	provider: string;
}

interface LlmSettings {
	/** Bound on one provider's /v1/models answer during health checks. */
	healthTimeoutMs: number;
}

interface LlmVars {
	providers: Provider[];
}

const LlmService: ServiceSchema<LlmSettings, Record<string, never>, LlmVars> = {
	name: "llm",

	settings: {
		healthTimeoutMs: 2000
	},

	actions: {
		/** Asks every provider's /v1/models, in parallel. */
		health: {
			params: {},
			async handler(): Promise<ProviderHealth[]> {
				return Promise.all(
					this.providers.map(async ({ config, client }) => {
						const start = performance.now();
						try {
							const page = await client.models.list({ timeout: this.settings.healthTimeoutMs });
							return {
								name: config.name,
								ok: true,
								models: page.data.map(m => m.id),
								durationMs: Math.round(performance.now() - start)
							};
						} catch (err) {
							return {
								name: config.name,
								ok: false,
								models: [],
								error: (err as Error).message,
								durationMs: Math.round(performance.now() - start)
							};
						}
					})
				);
			}
		},

		/** The models chatmesh offers: every configured model of every provider, in order. */
		models: {
			params: {},
			cache: { ttl: 30 },
			handler(): ModelInfo[] {
				const seen = new Set<string>();
				const models: ModelInfo[] = [];
				for (const { config } of this.providers)
					for (const id of config.models)
						if (!seen.has(id)) {
							seen.add(id);
							models.push({ id, provider: config.name });
						}
				return models;
			}
		}
	},

	created() {
		const { providers, config } = runtimeOf(this.broker);
		this.providers = createProviders(providers, config.requestTimeoutMs);
	}
};

export default LlmService;
