/** Arithmetic the model should not do in its head; evaluated by our own parser, never by eval. */
import { evaluate } from "../expression";
import { defineTool } from "../registry";

export default defineTool<{ expression: string }>({
	name: "calculator",
	description:
		"Evaluates an arithmetic expression and returns the number. Operators: + - * / % (remainder) ^ (power, also **), parentheses, unary minus. " +
		"Functions: sqrt, cbrt, abs, round(x[, digits]), floor, ceil, trunc, sign, exp, ln, log(x[, base]) (natural log by default), log10, log2, " +
		"sin, cos, tan, asin, acos, atan, atan2(y, x), sinh, cosh, tanh, pow(x, y), hypot, min, max (angles in radians). Constants: pi, e, tau.",
	parameters: {
		type: "object",
		properties: {
			expression: { type: "string", minLength: 1, maxLength: 1000, description: "For example: (2 + 3) * sqrt(16) / 2^3" }
		},
		required: ["expression"],
		additionalProperties: false
	},
	timeoutMs: 1000,
	async run({ expression }) {
		return evaluate(expression);
	}
});
