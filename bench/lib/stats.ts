/** Percentiles (nearest rank), medians and a compact summary of samples, all in plain numbers. */

function sorted(values: readonly number[]): number[] {
	return [...values].sort((a, b) => a - b);
}

/** Nearest-rank percentile of ascending values; NaN when there are none. */
function percentileOf(ascending: readonly number[], p: number): number {
	if (ascending.length === 0) return Number.NaN;
	const rank = Math.ceil((p / 100) * ascending.length);
	return ascending[Math.min(ascending.length, Math.max(1, rank)) - 1];
}

export function median(values: readonly number[]): number {
	const finite = values.filter(Number.isFinite);
	if (finite.length === 0) return Number.NaN;
	const s = sorted(finite);
	const mid = s.length >> 1;
	return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Nearest-rank percentile `p` (0–100) of samples in any order; NaN when there are none. */
export function quantile(values: readonly number[], p: number): number {
	return percentileOf(sorted(values.filter(Number.isFinite)), p);
}

export interface Summary {
	n: number;
	p50: number;
	p95: number;
	p99: number;
	max: number;
}

export function summarize(values: readonly number[]): Summary {
	const s = sorted(values);
	return { n: s.length, p50: percentileOf(s, 50), p95: percentileOf(s, 95), p99: percentileOf(s, 99), max: s.length ? s[s.length - 1] : Number.NaN };
}

/** Rounds for printing and JSON: NaN stays null in JSON, numbers keep `digits` decimals. */
export function round(value: number, digits = 2): number {
	const f = 10 ** digits;
	return Math.round(value * f) / f;
}

/**
 * Percentile bootstrap of a statistic over samples: the statistic of `rounds` resamplings (drawn
 * with replacement), and the interval holding the middle `level` of them. With 4000 rounds the
 * bounds move by about a tenth of a percent from one call to the next.
 */
export function bootstrapInterval<T>(samples: readonly T[], statistic: (resample: readonly T[]) => number, level = 0.95, rounds = 4000): [number, number] {
	if (samples.length === 0) return [Number.NaN, Number.NaN];
	const values: number[] = [];
	for (let r = 0; r < rounds; r++) {
		const resample = Array.from({ length: samples.length }, () => samples[Math.floor(Math.random() * samples.length)]);
		values.push(statistic(resample));
	}
	const s = sorted(values.filter(Number.isFinite));
	return [percentileOf(s, ((1 - level) / 2) * 100), percentileOf(s, ((1 + level) / 2) * 100)];
}
