/**
 * The services a node can run, by name. A node loads the subset its SERVICES setting names;
 * every service is reached only through the broker, so any subset works on any node.
 */
import type { ServiceSchema } from "moleculer";
import type { ServiceName } from "../lib/config";
import GatewayService from "./gateway/gateway.service";
import ConversationService from "./conversation/conversation.service";
import LlmService from "./llm/llm.service";
import ModerationService from "./moderation/moderation.service";
import QuotaService from "./quota/quota.service";
import ToolService from "./tool/tool.service";
import UserService from "./user/user.service";

export const SERVICE_SCHEMAS: Readonly<Record<ServiceName, ServiceSchema>> = {
	// Each schema is typed by its own settings; the broker takes them all alike.
	gateway: GatewayService as unknown as ServiceSchema,
	user: UserService as unknown as ServiceSchema,
	conversation: ConversationService as unknown as ServiceSchema,
	llm: LlmService as unknown as ServiceSchema,
	quota: QuotaService as unknown as ServiceSchema,
	moderation: ModerationService,
	tool: ToolService as unknown as ServiceSchema
};
