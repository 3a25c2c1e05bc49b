/**
 * The llm service's providers, one per configured OpenAI-compatible endpoint, in configured
 * order: the streamed chat endpoint generations use (./provider-stream.ts), and an official SDK
 * client for the rest (`/models`).
 */
import OpenAI from "openai";
import type { ProviderConfig } from "../../lib/config";
import { chatStreamEndpoint, type ChatStreamEndpoint } from "./provider-stream";

export interface Provider {
	config: ProviderConfig;
	chat: ChatStreamEndpoint;
	client: OpenAI;
}

export function createProviders(configs: ProviderConfig[], timeoutMs: number): Provider[] {
	return configs.map(config => ({
		config,
		chat: chatStreamEndpoint(config, timeoutMs),
		client: new OpenAI({
			baseURL: config.baseURL,
			// Local servers (vLLM, Ollama, the simulator) accept any key; the SDK insists on one.
			apiKey: config.apiKey ?? "no-key",
			maxRetries: 0,
			timeout: timeoutMs
		})
	}));
}
