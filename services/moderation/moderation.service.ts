/**
 * moderation: the content policy's verdict on a text going into or coming out of a model. For now
 * it allows everything; the chat turn already asks it and honours "block", so a real policy slots
 * in here without touching the turn.
 */
import type { Context, ServiceSchema } from "moleculer";

export interface ModerationVerdict {
	action: "allow" | "flag" | "block";
	categories: string[];
	reasons: string[];
}

export interface CheckParams {
	text: string;
	direction: "input" | "output";
}

const ModerationService: ServiceSchema = {
	name: "moderation",

	actions: {
		check: {
			visibility: "public",
			params: { text: { type: "string", max: 1_000_000 }, direction: { type: "enum", values: ["input", "output"] } },
			handler(_ctx: Context<CheckParams>): ModerationVerdict {
				return { action: "allow", categories: [], reasons: [] };
			}
		}
	}
};

export default ModerationService;
