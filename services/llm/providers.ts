/**
 * The llm service's provider clients: one official OpenAI SDK client per configured
 * OpenAI-compatible endpoint, in configured order.
 */
import OpenAI from "openai";
import type { ProviderConfig } from "../../lib/config";

export interface Provider {
	config: ProviderConfig;
	client: OpenAI;
}

export function createProviders(configs: ProviderConfig[], timeoutMs: number): Provider[] {
	return configs.map(config => ({
		config,
		client: new OpenAI({
			baseURL: config.baseURL,
			// Local servers (vLLM, Ollama, the simulator) accept any key; the SDK insists on one.
			apiKey: config.apiKey ?? "no-key",
			maxRetries: 0,
			timeout: timeoutMs
		})
	}));
}
