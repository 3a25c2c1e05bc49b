import { describe, expect, it } from "vitest";
import { evaluate, ExpressionError } from "../../services/tool/expression";

describe("calculator expressions", () => {
	it.each([
		["1 + 2 * 3", 7],
		["(1 + 2) * 3", 9],
		["10 - 4 - 3", 3], // left-associative
		["100 / 10 / 5", 2],
		["7 % 3", 1],
		["-7 % 3", -1],
		["2 ^ 10", 1024],
		["2 ^ 3 ^ 2", 512], // right-associative: 2^(3^2)
		["2 ** 3", 8],
		["-2 ^ 2", -4], // unary minus binds looser than ^
		["(-2) ^ 2", 4],
		["2 ^ -1", 0.5],
		["--3", 3],
		["-(4 - 6)", 2],
		["+5", 5],
		["3 * -2", -6],
		["0.1 + 0.2", 0.3], // 15 significant digits
		[".5 + 1.5e2", 150.5],
		["sqrt(16) + abs(-3)", 7],
		["round(2.567, 2)", 2.57],
		["round(2.5)", 3],
		["floor(-1.5) + ceil(1.2)", 0],
		["sin(0) + cos(0)", 1],
		["sin(pi / 2)", 1],
		["log(e)", 1],
		["log(8, 2)", 3],
		["log10(1000)", 3],
		["ln(1)", 0],
		["max(1, 5, 3) - min(4, 2)", 3],
		["pow(2, 8)", 256],
		["hypot(3, 4)", 5],
		["PI * 2 - tau", 0],
		["Sqrt(9)", 3],
		["  ( ( 1 ) )  ", 1]
	])("%s = %d", (expression, expected) => {
		expect(evaluate(expression)).toBeCloseTo(expected, 12);
	});

	it.each([
		["process.exit()", /unexpected character '\.'/],
		["constructor", /unknown name 'constructor'/],
		["__proto__", /unknown name/],
		["toString(1)", /unknown function 'tostring'/],
		["1/0", /division by zero/],
		["5 % 0", /division by zero/],
		["2**", /unexpected end/],
		["a=1", /unexpected character '='/],
		["", /empty/],
		["1 +", /unexpected end/],
		["(1 + 2", /expected '\)'/],
		["1 + 2)", /unexpected '\)'/],
		["2 3", /unexpected '3'/],
		["2pi", /unexpected 'pi'/],
		["sqrt", /sqrt is a function/],
		["sqrt(1, 2)", /sqrt takes 1 argument, not 2/],
		["sqrt(-1)", /sqrt is not defined/],
		["log(0)", /log is not defined/],
		["10 ^ 400", /not a finite number/],
		["1e999", /not a finite number/],
		["round(1.5, 1.5)", /whole number/],
		["this", /unknown name/],
		["`1`", /unexpected character '`'/],
		["require('fs')", /unexpected character/],
		["1; 2", /unexpected character ';'/]
	])("refuses %j", (expression, message) => {
		expect(() => evaluate(expression)).toThrow(ExpressionError);
		expect(() => evaluate(expression)).toThrow(message);
	});

	it("refuses nesting deep enough to exhaust the stack, with an error rather than a crash", () => {
		expect(() => evaluate(`${"(".repeat(5000)}1${")".repeat(5000)}`)).toThrow(/nested too deeply/);
		expect(() => evaluate(`${"-".repeat(5000)}1`)).toThrow(/nested too deeply/);
		expect(evaluate(`${"(".repeat(50)}1${")".repeat(50)}`)).toBe(1);
	});
});
