/** The tools every node offers. Deployments add their own through the service's settings.extraTools. */
import type { ToolModule } from "../registry";
import calculator from "./calculator";
import currentTime from "./current-time";
import searchConversations from "./search-conversations";

export const BUILTIN_TOOLS: readonly ToolModule[] = [calculator, currentTime, searchConversations];
