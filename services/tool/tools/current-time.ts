/** The current date and time in a time zone: models have no clock of their own. */
import { defineTool } from "../registry";

export interface CurrentTime {
	/** The zone as asked for (in ICU's spelling when only the case differs). */
	timezone: string;
	/** The local date and time with its UTC offset, e.g. 2025-03-03T15:30:00+05:30. */
	iso: string;
	/** The same, as a person would read it. */
	local: string;
}

function formatterFor(timezone: string): Intl.DateTimeFormat {
	try {
		return new Intl.DateTimeFormat("en-US", {
			timeZone: timezone,
			year: "numeric",
			month: "2-digit",
			day: "2-digit",
			hour: "2-digit",
			minute: "2-digit",
			second: "2-digit",
			hourCycle: "h23",
			timeZoneName: "longOffset"
		});
	} catch {
		throw new Error(`unknown time zone '${timezone}': use an IANA name such as "Europe/Paris" or "UTC"`);
	}
}

export function currentTime(timezone: string, now = new Date()): CurrentTime {
	const formatter = formatterFor(timezone);
	const parts = Object.fromEntries(formatter.formatToParts(now).map(p => [p.type, p.value]));
	// "GMT+05:30" → "+05:30"; plain "GMT" is UTC itself.
	const offset = parts.timeZoneName === "GMT" ? "+00:00" : (parts.timeZoneName ?? "").replace(/^GMT/, "");
	// ICU answers with its own, sometimes older, alias (Asia/Kolkata → Asia/Calcutta): keep the caller's name.
	const resolved = formatter.resolvedOptions().timeZone;
	const zone = resolved.toLowerCase() === timezone.toLowerCase() ? resolved : timezone;
	return {
		timezone: zone,
		iso: `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}:${parts.second}${offset}`,
		local: new Intl.DateTimeFormat("en-US", { timeZone: zone, dateStyle: "full", timeStyle: "long" }).format(now)
	};
}

export default defineTool<{ timezone: string }>({
	name: "current_time",
	description: 'Returns the current date and time in a time zone (IANA name such as "America/New_York"; default UTC).',
	parameters: {
		type: "object",
		properties: {
			timezone: { type: "string", minLength: 1, maxLength: 64, default: "UTC", description: "IANA time zone name" }
		},
		additionalProperties: false
	},
	timeoutMs: 1000,
	async run({ timezone }) {
		return currentTime(timezone);
	}
});
