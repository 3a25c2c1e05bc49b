/**
 * The calculator's arithmetic: a tokenizer and a recursive-descent parser that evaluates as it
 * parses. Only numbers, the operators below, and the functions and constants in the tables are
 * understood; names are looked up in Maps (never on objects, so "constructor" or "__proto__" is
 * just an unknown name) and nothing is ever handed to eval or Function.
 *
 *   expr    := term (("+" | "-") term)*
 *   term    := unary (("*" | "/" | "%") unary)*
 *   unary   := ("+" | "-") unary | power
 *   power   := primary (("^" | "**") unary)?      right-associative; -2^2 = -(2^2)
 *   primary := number | name | name "(" expr ("," expr)* ")" | "(" expr ")"
 */

/** Input the calculator cannot evaluate; the message is meant for the model that wrote it. */
export class ExpressionError extends Error {
	constructor(message: string) {
		super(message);
		this.name = "ExpressionError";
	}
}

interface Fn {
	min: number;
	max: number;
	apply(...args: number[]): number;
}

const fn1 = (apply: (x: number) => number): Fn => ({ min: 1, max: 1, apply });
const variadic = (apply: (...xs: number[]) => number): Fn => ({ min: 1, max: 64, apply });

const FUNCTIONS: ReadonlyMap<string, Fn> = new Map<string, Fn>([
	["sqrt", fn1(Math.sqrt)],
	["cbrt", fn1(Math.cbrt)],
	["abs", fn1(Math.abs)],
	["floor", fn1(Math.floor)],
	["ceil", fn1(Math.ceil)],
	["trunc", fn1(Math.trunc)],
	["sign", fn1(Math.sign)],
	["exp", fn1(Math.exp)],
	["ln", fn1(Math.log)],
	["log10", fn1(Math.log10)],
	["log2", fn1(Math.log2)],
	["sin", fn1(Math.sin)],
	["cos", fn1(Math.cos)],
	["tan", fn1(Math.tan)],
	["asin", fn1(Math.asin)],
	["acos", fn1(Math.acos)],
	["atan", fn1(Math.atan)],
	["sinh", fn1(Math.sinh)],
	["cosh", fn1(Math.cosh)],
	["tanh", fn1(Math.tanh)],
	// log(x) is the natural logarithm, as in most programming languages; log(x, base) for others.
	["log", { min: 1, max: 2, apply: (x, base) => (base === undefined ? Math.log(x) : Math.log(x) / Math.log(base)) }],
	["round", { min: 1, max: 2, apply: (x, digits) => roundTo(x, digits ?? 0) }],
	["pow", { min: 2, max: 2, apply: (x, y) => x ** y }],
	["atan2", { min: 2, max: 2, apply: (y, x) => Math.atan2(y, x) }],
	["hypot", variadic(Math.hypot)],
	["min", variadic(Math.min)],
	["max", variadic(Math.max)]
]);

const CONSTANTS: ReadonlyMap<string, number> = new Map([
	["pi", Math.PI],
	["e", Math.E],
	["tau", 2 * Math.PI]
]);

function roundTo(x: number, digits: number): number {
	if (!Number.isInteger(digits) || digits < 0 || digits > 15) throw new ExpressionError("round's second argument must be a whole number from 0 to 15");
	const factor = 10 ** digits;
	return Math.round(x * factor) / factor;
}

type Token = { kind: "number"; value: number; at: number } | { kind: "name"; value: string; at: number } | { kind: "op"; value: string; at: number };

const NUMBER = /^(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?/;
const NAME = /^[A-Za-z_][A-Za-z0-9_]*/;
const OPERATORS = ["**", "+", "-", "*", "/", "%", "^", "(", ")", ","];

function tokenize(source: string): Token[] {
	const tokens: Token[] = [];
	let at = 0;
	while (at < source.length) {
		const rest = source.slice(at);
		const space = /^\s+/.exec(rest);
		if (space) {
			at += space[0].length;
			continue;
		}
		const number = NUMBER.exec(rest);
		if (number) {
			tokens.push({ kind: "number", value: Number(number[0]), at });
			at += number[0].length;
			continue;
		}
		const name = NAME.exec(rest);
		if (name) {
			tokens.push({ kind: "name", value: name[0], at });
			at += name[0].length;
			continue;
		}
		const op = OPERATORS.find(o => rest.startsWith(o));
		if (!op) throw new ExpressionError(`unexpected character '${String.fromCodePoint(rest.codePointAt(0) ?? 0)}' at position ${at + 1}`);
		tokens.push({ kind: "op", value: op, at });
		at += op.length;
	}
	return tokens;
}

/** Deep enough for any real formula, shallow enough that "((((…" cannot exhaust the stack. */
const MAX_DEPTH = 100;

class Parser {
	private pos = 0;
	private depth = 0;

	constructor(private readonly tokens: Token[]) {}

	parse(): number {
		if (this.tokens.length === 0) throw new ExpressionError("the expression is empty");
		const value = this.expr();
		const extra = this.peek();
		if (extra) throw new ExpressionError(`unexpected '${extra.value}' at position ${extra.at + 1}`);
		return value;
	}

	private peek(): Token | undefined {
		return this.tokens[this.pos];
	}

	private isOp(value: string): boolean {
		const t = this.peek();
		return t?.kind === "op" && t.value === value;
	}

	private expect(value: string): void {
		if (!this.isOp(value)) this.fail(`'${value}'`);
		this.pos++;
	}

	private fail(wanted: string): never {
		const t = this.peek();
		if (!t) throw new ExpressionError(`unexpected end of expression (expected ${wanted})`);
		throw new ExpressionError(`unexpected '${t.value}' at position ${t.at + 1} (expected ${wanted})`);
	}

	private nested<T>(work: () => T): T {
		if (++this.depth > MAX_DEPTH) throw new ExpressionError("the expression is nested too deeply");
		try {
			return work();
		} finally {
			this.depth--;
		}
	}

	private expr(): number {
		let value = this.term();
		while (this.isOp("+") || this.isOp("-")) {
			const op = this.tokens[this.pos++].value;
			const right = this.term();
			value = finite(op === "+" ? value + right : value - right);
		}
		return value;
	}

	private term(): number {
		let value = this.unary();
		while (this.isOp("*") || this.isOp("/") || this.isOp("%")) {
			const op = this.tokens[this.pos++].value;
			const right = this.unary();
			if (op !== "*" && right === 0) throw new ExpressionError("division by zero");
			value = finite(op === "*" ? value * right : op === "/" ? value / right : value % right);
		}
		return value;
	}

	private unary(): number {
		if (this.isOp("-") || this.isOp("+")) {
			const negate = this.tokens[this.pos++].value === "-";
			const value = this.nested(() => this.unary());
			return negate ? -value : value;
		}
		return this.power();
	}

	private power(): number {
		const base = this.primary();
		if (!this.isOp("^") && !this.isOp("**")) return base;
		this.pos++;
		// The exponent is a unary, so 2^-1 works and 2^3^2 is 2^(3^2).
		const exponent = this.nested(() => this.unary());
		return finite(base ** exponent);
	}

	private primary(): number {
		const t = this.peek();
		if (!t) return this.fail("a number, a name or '('");
		if (t.kind === "number") {
			this.pos++;
			return finite(t.value);
		}
		if (t.kind === "name") {
			this.pos++;
			const name = t.value.toLowerCase();
			if (this.isOp("(")) return this.call(name, t.at);
			const constant = CONSTANTS.get(name);
			if (constant === undefined) throw new ExpressionError(FUNCTIONS.has(name) ? `${name} is a function: write ${name}(…)` : `unknown name '${t.value}'`);
			return constant;
		}
		if (t.value === "(") {
			this.pos++;
			const value = this.nested(() => this.expr());
			this.expect(")");
			return value;
		}
		return this.fail("a number, a name or '('");
	}

	private call(name: string, at: number): number {
		const fn = FUNCTIONS.get(name);
		if (!fn) throw new ExpressionError(`unknown function '${name}' at position ${at + 1}`);
		this.pos++; // "("
		const args = this.nested(() => {
			const list = [this.expr()];
			while (this.isOp(",")) {
				this.pos++;
				list.push(this.expr());
			}
			return list;
		});
		this.expect(")");
		if (args.length < fn.min || args.length > fn.max) {
			const wanted = fn.min === fn.max ? `${fn.min}` : fn.max >= 64 ? `at least ${fn.min}` : `${fn.min} or ${fn.max}`;
			throw new ExpressionError(`${name} takes ${wanted} argument${fn.max === 1 ? "" : "s"}, not ${args.length}`);
		}
		return finite(fn.apply(...args), name);
	}
}

/** Every intermediate value must be a real number: no NaN from sqrt(-1), no overflow to Infinity. */
function finite(value: number, fn?: string): number {
	if (Number.isFinite(value)) return value;
	throw new ExpressionError(fn ? `${fn} is not defined for these arguments` : "the result is not a finite number");
}

/**
 * Evaluates an arithmetic expression. Results are rounded to 15 significant digits, so that
 * binary floating point shows as the decimal a person expects (0.1 + 0.2 = 0.3).
 */
export function evaluate(source: string): number {
	const value = new Parser(tokenize(source)).parse();
	const rounded = Number(value.toPrecision(15));
	return Object.is(rounded, -0) ? 0 : rounded;
}
