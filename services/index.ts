/**
 * The services a node can run, by name. A node loads the subset its SERVICES setting names;
 * every service is reached only through the broker, so any subset works on any node.
 */
import type { ServiceName } from "../lib/config";
import { defineService, type ServiceDefinition } from "../lib/service";
import GatewayService from "./gateway/gateway.service";
import JobsService from "./jobs/jobs.service";
import ConversationService from "./conversation/conversation.service";
import LlmService from "./llm/llm.service";
import ModerationService from "./moderation/moderation.service";
import QuotaService from "./quota/quota.service";
import ToolService from "./tool/tool.service";
import UserService from "./user/user.service";

export const SERVICES: Readonly<Record<ServiceName, ServiceDefinition>> = {
	gateway: defineService(GatewayService),
	user: defineService(UserService),
	conversation: defineService(ConversationService),
	llm: defineService(LlmService),
	quota: defineService(QuotaService),
	moderation: defineService(ModerationService),
	tool: defineService(ToolService),
	jobs: defineService(JobsService)
};
