/**
 * The checks a moderation service runs, from the node's configuration. The local checks always
 * run; the deny list and the provider only when configured.
 */
import type { ChatmeshConfig } from "../../../lib/config";
import type { ModerationCheck } from "./check";
import { denyListCheck } from "./deny-list";
import { profanityCheck } from "./profanity";
import { promptInjectionCheck } from "./prompt-injection";
import { providerCheck } from "./provider";

export * from "./check";

export interface ChecksOptions {
	providerTimeoutMs: number;
	providerModel?: string;
}

type ModerationConfig = Pick<ChatmeshConfig, "moderationDenyList" | "moderationProviderUrl" | "moderationProviderApiKey">;

export function buildChecks(config: ModerationConfig, options: ChecksOptions): ModerationCheck[] {
	const checks: ModerationCheck[] = [profanityCheck(), promptInjectionCheck()];
	if (config.moderationDenyList.length > 0) checks.push(denyListCheck(config.moderationDenyList));
	if (config.moderationProviderUrl)
		checks.push(
			providerCheck({
				baseURL: config.moderationProviderUrl,
				apiKey: config.moderationProviderApiKey,
				timeoutMs: options.providerTimeoutMs,
				model: options.providerModel
			})
		);
	return checks;
}
