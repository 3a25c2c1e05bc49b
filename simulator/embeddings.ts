/**
 * Deterministic embeddings: each input's vector is drawn from a generator seeded by a hash of
 * the input, then scaled to unit length. Values are float32-exact so the JSON float form and
 * the base64 form (which the openai SDK asks for by default) decode to the same numbers.
 */
import { countTokens, hashString, SeededRandom } from "./text";

/** A unit-length vector of `dimensions` float32 values for `input`. */
export function embeddingVector(input: string, dimensions: number): Float32Array {
	const random = new SeededRandom(hashString(input, 0x5eed));
	const values = new Float64Array(dimensions);
	let norm = 0;
	for (let i = 0; i < dimensions; i++) {
		// The sum of two uniforms: centred, bounded, cheap.
		const v = random.nextFloat() + random.nextFloat() - 1;
		values[i] = v;
		norm += v * v;
	}
	const out = new Float32Array(dimensions);
	if (norm === 0) {
		out[0] = 1;
		return out;
	}
	const scale = 1 / Math.sqrt(norm);
	for (let i = 0; i < dimensions; i++) out[i] = (values[i] as number) * scale;
	return out;
}

/** Little-endian float32 bytes in base64, as OpenAI's `encoding_format: "base64"`. */
export function float32ToBase64(vector: Float32Array): string {
	const bytes = Buffer.alloc(vector.length * 4);
	for (let i = 0; i < vector.length; i++) bytes.writeFloatLE(vector[i] as number, i * 4);
	return bytes.toString("base64");
}

/**
 * The inputs of an embeddings request as strings: a string, an array of strings, a token array
 * (numbers) or an array of token arrays. Returns undefined when the shape is not one of those.
 */
export function embeddingInputs(input: unknown): string[] | undefined {
	if (typeof input === "string") return [input];
	if (!Array.isArray(input) || input.length === 0) return undefined;
	if (input.every(v => typeof v === "string")) return input as string[];
	if (input.every(v => typeof v === "number")) return [`tokens:${input.join(",")}`];
	if (input.every(v => Array.isArray(v) && v.length > 0 && v.every(n => typeof n === "number"))) {
		return (input as number[][]).map(tokens => `tokens:${tokens.join(",")}`);
	}
	return undefined;
}

/** Usage tokens of the inputs (token-array inputs count their length). */
export function embeddingTokens(input: unknown, inputs: readonly string[]): number {
	if (Array.isArray(input) && input.every(v => typeof v === "number")) return input.length;
	if (Array.isArray(input) && input.every(v => Array.isArray(v))) {
		return (input as unknown[][]).reduce((sum, tokens) => sum + tokens.length, 0);
	}
	return inputs.reduce((sum, text) => sum + countTokens(text), 0);
}
