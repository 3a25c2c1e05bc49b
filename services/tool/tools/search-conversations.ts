/** Finds the user's own earlier messages; conversation.search scopes the query to the caller. */
import type { SearchHit } from "../../conversation/conversation.service";
import { defineTool } from "../registry";

export default defineTool<{ query: string; limit: number }>({
	name: "search_conversations",
	description: "Searches the user's own earlier conversations for messages containing the query text (case-insensitive); newest first, with a snippet of each.",
	parameters: {
		type: "object",
		properties: {
			query: { type: "string", minLength: 1, maxLength: 200, description: "Text to look for" },
			limit: { type: "integer", minimum: 1, maximum: 50, default: 10, description: "How many messages at most" }
		},
		required: ["query"],
		additionalProperties: false
	},
	async run({ query, limit }, ctx) {
		const { items } = await ctx.call<{ items: SearchHit[] }>("conversation.search", { query, limit });
		return { query, count: items.length, items };
	}
});
