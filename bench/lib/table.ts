/** Plain-text tables for the terminal and for pasting into BENCHMARKS.md (GitHub markdown). */

export type Cell = string | number | null | undefined;

export function fmt(value: Cell, digits = 2): string {
	if (value === null || value === undefined) return "–";
	if (typeof value === "string") return value;
	if (!Number.isFinite(value)) return "–";
	return Number.isInteger(value) ? String(value) : value.toFixed(digits);
}

/** A markdown table: header row, separator, rows; numbers right-aligned by padding. */
export function table(title: string, header: string[], rows: Cell[][]): string {
	const text = rows.map(r => r.map(c => fmt(c)));
	// Columns holding numbers are right-aligned, text columns left-aligned.
	const numeric = header.map((_, i) => rows.every(r => typeof r[i] === "number" || r[i] === null || r[i] === undefined));
	const widths = header.map((h, i) => Math.max(h.length, ...text.map(r => (r[i] ?? "").length)));
	const pad = (c: string, i: number) => (numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]));
	const line = (cells: string[]) => `| ${cells.map(pad).join(" | ")} |`;
	const rule = `|${widths.map((w, i) => (numeric[i] ? `${"-".repeat(w + 1)}:` : `:${"-".repeat(w + 1)}`)).join("|")}|`;
	return [`\n${title}\n`, line(header), rule, ...text.map(line)].join("\n");
}
