/**
 * The gateway's rate limits, shared by every replica: counters live in Redis, so with a limit of
 * L per window all replicas together let at most L requests through. Without Redis (one embedded
 * process) they live in memory. When Redis fails, hangs or is not connected yet, each limiter
 * answers from a per-node memory copy of the same rule (rate-limiter-flexible's insurance
 * limiter) and one warning is logged per outage: limits stay bounded, nobody is locked out.
 *
 * Keys are `${keyPrefix}:<bucket>:<sha256 of the caller>`: no email, address, user id or token
 * is ever stored in Redis in the clear.
 */
import { createHash } from "node:crypto";
import { isIPv6 } from "node:net";
import type { Redis } from "ioredis";
import type { MetricRegistry } from "moleculer";
import { RateLimiterMemory, RateLimiterRedis, RateLimiterRes, RLWrapperTimeouts, type RateLimiterAbstract } from "rate-limiter-flexible";
import { RateLimitedError } from "../../lib/errors";
import { ensureMetric, incrementIn, METRICS } from "../../lib/metrics";

export type RouteClass = "chat" | "auth" | "default";

/** `points` requests per window of `durationS` seconds (a fixed window, counted atomically in Redis). */
export interface RateLimitRule {
	points: number;
	durationS: number;
}

export interface RateLimitSettings {
	/** Prefix of every key, e.g. `${namespace}:rl`, so clusters and test files never share counters. */
	keyPrefix: string;
	perUser: Record<RouteClass, RateLimitRule>;
	perIp: Record<RouteClass, RateLimitRule>;
	/** Failed sign-ins per email and address; see `loginFailed` for the back-off. */
	loginFailures: { points: number; durationS: number; blockDurationS: number; maxBlockDurationS: number };
}

/**
 * Defaults, per minute unless said otherwise:
 * - chat 30 per user: each request runs a model, and one every two seconds is above any human's
 *   pace. 300 per address, because chat needs an account and offices share one NAT address; the
 *   address limit only bounds one host driving many accounts.
 * - auth 20 per address: sign-in, registration and refresh are what credential stuffing hits,
 *   and a whole office refreshing every 15 minutes stays far below it. 20 per user as well.
 * - default 300 per user and 600 per address: reads and small writes, generous for a UI that
 *   polls, low enough that one client cannot monopolise a replica.
 * - failed sign-ins: 5 per 15 minutes per email and address, then a 15-minute block that doubles
 *   with each new block (30 min, 1 h, …) up to 24 h.
 */
export const DEFAULT_RATE_LIMITS: RateLimitSettings = {
	keyPrefix: "chatmesh:rl",
	perUser: {
		chat: { points: 30, durationS: 60 },
		auth: { points: 20, durationS: 60 },
		default: { points: 300, durationS: 60 }
	},
	perIp: {
		chat: { points: 300, durationS: 60 },
		auth: { points: 20, durationS: 60 },
		default: { points: 600, durationS: 60 }
	},
	loginFailures: { points: 5, durationS: 15 * 60, blockDurationS: 15 * 60, maxBlockDurationS: 24 * 3600 }
};

export interface RateLimitDecision {
	allowed: boolean;
	/** The limit of the bucket this decision is about. */
	limit: number;
	remaining: number;
	/** Seconds until that bucket's window resets (0 when nothing is counted yet). */
	resetS: number;
	/** Set when refused: seconds to wait before trying again. */
	retryAfterS?: number;
	scope?: "user" | "ip" | "login";
}

export interface RateLimiterLogger {
	warn(msg: string, ...a: unknown[]): void;
	info?(msg: string, ...a: unknown[]): void;
	error?(msg: string, ...a: unknown[]): void;
}

/** Failed sign-ins the limiter could not count (see `recordLoginFailure`). */
export const METRIC_LOGIN_FAILURES_UNCOUNTED = METRICS.loginFailuresUncounted.name;

export interface RateLimiterOptions {
	settings: RateLimitSettings;
	/** Shared counters; without it every counter is per process. */
	redis?: Redis;
	logger?: RateLimiterLogger;
	/** A Redis call slower than this is answered from memory instead (a hung Redis must not hang requests). */
	redisTimeoutMs?: number;
	/** The broker's metric registry, for the limiter's own counters. */
	metrics?: MetricRegistry;
}

const DEFAULT_REDIS_TIMEOUT_MS = 500;

/** One counter store for one rule, and the rule (a timeout wrapper reports no points of its own). */
interface Bucket {
	limiter: RateLimiterAbstract;
	points: number;
}

type MemoryOptions = ConstructorParameters<typeof RateLimiterMemory>[0];
type LimiterOptions = Record<string, unknown>;

/** The per-node fallback of one Redis limiter; tells its owner each time it has to answer. */
class InsuranceLimiter extends RateLimiterMemory {
	readonly #onUse: () => void;

	constructor(opts: MemoryOptions, onUse: () => void) {
		super(opts);
		this.#onUse = onUse;
	}

	override consume(key: string | number, points?: number, options?: LimiterOptions): Promise<RateLimiterRes> {
		this.#onUse();
		return super.consume(key, points, options);
	}

	override penalty(key: string | number, points?: number, options?: LimiterOptions): Promise<RateLimiterRes> {
		this.#onUse();
		return super.penalty(key, points, options);
	}

	override get(key: string | number, options?: LimiterOptions): Promise<RateLimiterRes | null> {
		this.#onUse();
		return super.get(key, options);
	}

	override set(key: string | number, points: number, secDuration: number, options?: LimiterOptions): Promise<RateLimiterRes> {
		this.#onUse();
		return super.set(key, points, secDuration, options);
	}

	override block(key: string | number, secDuration: number, options?: LimiterOptions): Promise<RateLimiterRes> {
		this.#onUse();
		return super.block(key, secDuration, options);
	}

	override delete(key: string | number, options?: LimiterOptions): Promise<boolean> {
		this.#onUse();
		return super.delete(key, options);
	}
}

/** A key part that reveals nothing: 128 bits of sha256 are plenty to keep callers apart. */
function digest(value: string): string {
	return createHash("sha256").update(value).digest("hex").slice(0, 32);
}

/** An IPv6 address as its eight hextets (it must already be valid). */
function hextets(address: string): number[] {
	let text = address;
	// A trailing dotted quad (::ffff:192.0.2.1, 64:ff9b::192.0.2.1) stands for the last two hextets.
	const quad = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
	if (quad) {
		const [a, b, c, d] = quad.slice(1).map(Number);
		text = `${text.slice(0, quad.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
	}
	const [head, tail] = text.split("::");
	const left = head ? head.split(":") : [];
	const right = tail ? tail.split(":") : [];
	const zeros = tail === undefined ? [] : new Array<string>(8 - left.length - right.length).fill("0");
	return [...left, ...zeros, ...right].map(h => parseInt(h, 16));
}

/**
 * The address an IP limit counts: IPv4 as is (also when written IPv4-mapped), IPv6 by its /64,
 * the smallest block one subscriber is given; counting single IPv6 addresses would let one host
 * walk through 2^64 of them.
 */
export function ipBucket(ip: string): string {
	let address = ip.trim().toLowerCase();
	if (address.startsWith("[") && address.endsWith("]")) address = address.slice(1, -1);
	const zone = address.indexOf("%");
	if (zone >= 0) address = address.slice(0, zone);
	if (!isIPv6(address)) return address;
	const h = hextets(address);
	if (h.slice(0, 5).every(x => x === 0) && h[5] === 0xffff) return [h[6] >> 8, h[6] & 0xff, h[7] >> 8, h[7] & 0xff].join(".");
	return `${h
		.slice(0, 4)
		.map(x => x.toString(16))
		.join(":")}::/64`;
}

function normalizeEmail(email: string): string {
	return email.trim().toLowerCase();
}

const seconds = (ms: number) => Math.max(0, Math.ceil(ms / 1000));

function allowedDecision(points: number, res: RateLimiterRes | null, scope: RateLimitDecision["scope"]): RateLimitDecision {
	const consumed = res?.consumedPoints ?? 0;
	return { allowed: true, limit: points, remaining: Math.max(points - consumed, 0), resetS: res ? seconds(res.msBeforeNext) : 0, scope };
}

function refusedDecision(points: number, retryAfterMs: number, scope: RateLimitDecision["scope"]): RateLimitDecision {
	// Never "retry after 0": the window may end a few ms from now, but the client must still wait.
	const retryAfterS = Math.max(1, seconds(retryAfterMs));
	return { allowed: false, limit: points, remaining: 0, resetS: retryAfterS, retryAfterS, scope };
}

/** Refused beats allowed; then the longer wait, or the fewer requests left. */
function mostRestrictive(decisions: RateLimitDecision[]): RateLimitDecision {
	return decisions.reduce((worst, d) => {
		if (d.allowed !== worst.allowed) return d.allowed ? worst : d;
		if (!d.allowed) return (d.retryAfterS ?? 0) > (worst.retryAfterS ?? 0) ? d : worst;
		if (d.remaining !== worst.remaining) return d.remaining < worst.remaining ? d : worst;
		return d.resetS > worst.resetS ? d : worst;
	});
}

/** Redis expiries are whole seconds, and a 0 duration would mean "never expires". */
function assertWhole(name: string, value: number): void {
	if (!Number.isInteger(value) || value < 1) throw new TypeError(`rate limit ${name} must be a whole number >= 1`);
}

export class RateLimiter {
	readonly #settings: RateLimitSettings;
	readonly #redis?: Redis;
	readonly #logger?: RateLimiterLogger;
	readonly #redisTimeoutMs: number;
	readonly #metrics?: MetricRegistry;
	readonly #perUser: Record<RouteClass, Bucket>;
	readonly #perIp: Record<RouteClass, Bucket>;
	readonly #loginFailures: Bucket;
	/** How many blocks an email+address has had lately; only get/set/delete are used. */
	readonly #loginBlocks: Bucket;
	/** Answers given from memory so far; a call that leaves it unchanged was answered by Redis. */
	#fallbacks = 0;
	#degraded = false;

	constructor(opts: RateLimiterOptions) {
		const { settings } = opts;
		this.#settings = settings;
		this.#redis = opts.redis;
		this.#logger = opts.logger;
		this.#redisTimeoutMs = opts.redisTimeoutMs ?? DEFAULT_REDIS_TIMEOUT_MS;
		this.#metrics = opts.metrics;
		// Every scope's refusal series exists from the start (at 0), so rates over it read 0, not nothing.
		for (const scope of ["ip", "user", "login"]) incrementIn(this.#metrics, "rateLimitRefusals", { scope }, 0);
		if (this.#metrics) ensureMetric(this.#metrics, "loginFailuresUncounted");
		const classes: RouteClass[] = ["chat", "auth", "default"];
		const perClass = (scope: "user" | "ip", rules: Record<RouteClass, RateLimitRule>) =>
			Object.fromEntries(classes.map(c => [c, this.#bucket(`${scope}:${c}`, rules[c])])) as Record<RouteClass, Bucket>;
		this.#perUser = perClass("user", settings.perUser);
		this.#perIp = perClass("ip", settings.perIp);
		const login = settings.loginFailures;
		this.#loginFailures = this.#bucket("login:fail", { points: login.points, durationS: login.durationS });
		assertWhole("loginFailures.blockDurationS", login.blockDurationS);
		assertWhole("loginFailures.maxBlockDurationS", login.maxBlockDurationS);
		this.#loginBlocks = this.#bucket("login:blocks", { points: 1, durationS: login.maxBlockDurationS });
	}

	#bucket(name: string, rule: RateLimitRule): Bucket {
		assertWhole(`${name} points`, rule.points);
		assertWhole(`${name} durationS`, rule.durationS);
		const opts = { keyPrefix: `${this.#settings.keyPrefix}:${name}`, points: rule.points, duration: rule.durationS };
		if (!this.#redis) return { limiter: new RateLimiterMemory(opts), points: rule.points };
		const redisLimiter = new RateLimiterRedis({
			...opts,
			storeClient: this.#redis,
			// A client that is connecting or reconnecting would queue or reject anyway: go to memory at once.
			rejectIfRedisNotReady: true,
			insuranceLimiter: new InsuranceLimiter(opts, () => this.#usedMemory())
		});
		// The wrapper hands a timed-out call to the same insurance limiter.
		return { limiter: new RLWrapperTimeouts({ limiter: redisLimiter, timeoutMs: this.#redisTimeoutMs }), points: rule.points };
	}

	#usedMemory(): void {
		this.#fallbacks += 1;
		if (this.#degraded) return;
		this.#degraded = true;
		this.#logger?.warn("Rate limiter: Redis is unavailable or too slow; counting in this node's memory until it answers again", {
			redisStatus: this.#redis?.status
		});
	}

	/**
	 * Runs one limiter call. rate-limiter-flexible rejects with a RateLimiterRes when the caller is
	 * over the limit (a refusal, returned as `refused`) and with an Error when the store fails and
	 * no insurance could answer (a real failure, rethrown).
	 */
	async #run<T>(call: () => Promise<T>): Promise<{ value: T; refused: false } | { value: RateLimiterRes; refused: true }> {
		const fallbacksBefore = this.#fallbacks;
		let outcome: { value: T; refused: false } | { value: RateLimiterRes; refused: true };
		try {
			outcome = { value: await call(), refused: false };
		} catch (err) {
			if (!(err instanceof RateLimiterRes)) throw err;
			outcome = { value: err, refused: true };
		}
		if (this.#degraded && this.#fallbacks === fallbacksBefore && this.#redis) {
			this.#degraded = false;
			this.#logger?.info?.("Rate limiter: Redis answers again; limits are cluster-wide again");
		}
		return outcome;
	}

	async #consume(bucket: Bucket, key: string, scope: "user" | "ip"): Promise<RateLimitDecision> {
		const outcome = await this.#run(() => bucket.limiter.consume(key));
		return outcome.refused ? refusedDecision(bucket.points, outcome.value.msBeforeNext, scope) : allowedDecision(bucket.points, outcome.value, scope);
	}

	/** Consumes one point for the caller: the user's bucket when userId is given, and always the IP's bucket. Returns the most restrictive decision. */
	async consume(routeClass: RouteClass, ip: string, userId?: string): Promise<RateLimitDecision> {
		const checks = [this.#consume(this.#perIp[routeClass], digest(ipBucket(ip)), "ip")];
		if (userId !== undefined) checks.push(this.#consume(this.#perUser[routeClass], digest(userId), "user"));
		const decision = mostRestrictive(await Promise.all(checks));
		if (!decision.allowed) this.#refused(decision);
		return decision;
	}

	#refused(decision: RateLimitDecision): void {
		incrementIn(this.#metrics, "rateLimitRefusals", { scope: decision.scope ?? "unknown" });
	}

	#loginKey(email: string, ip: string): string {
		return digest(JSON.stringify([normalizeEmail(email), ipBucket(ip)]));
	}

	/** Before checking a password: is this email+ip currently blocked after failed logins? */
	async checkLogin(email: string, ip: string): Promise<RateLimitDecision> {
		const { limiter, points } = this.#loginFailures;
		const { value: res } = await this.#run(() => limiter.get(this.#loginKey(email, ip)));
		// A memory record can outlive its expiry by a timer tick; an expired one counts as none.
		const current = res && res.msBeforeNext > 0 ? res : null;
		if (current && current.consumedPoints >= points) {
			const refused = refusedDecision(points, current.msBeforeNext, "login");
			this.#refused(refused);
			return refused;
		}
		return allowedDecision(points, current, "login");
	}

	/**
	 * After a failed login: counts it. The failure that reaches `points` within `durationS` blocks
	 * the email+ip. Only that one failure can (Redis increments atomically), so one block is set
	 * however many replicas race. Each block is recorded in a second counter, kept until
	 * `maxBlockDurationS` after the block ends; block n lasts blockDurationS × 2^(n-1), capped at
	 * maxBlockDurationS. A key that stays clean for maxBlockDurationS after its last block starts
	 * over at blockDurationS; a successful login starts it over at once.
	 */
	async loginFailed(email: string, ip: string): Promise<RateLimitDecision> {
		const { limiter, points } = this.#loginFailures;
		const key = this.#loginKey(email, ip);
		const outcome = await this.#run(() => limiter.consume(key));
		// Already blocked (failures counted while blocked neither extend nor repeat the block).
		if (outcome.refused) return refusedDecision(points, outcome.value.msBeforeNext, "login");
		if (outcome.value.consumedPoints < points) return allowedDecision(points, outcome.value, "login");

		const { maxBlockDurationS, blockDurationS } = this.#settings.loginFailures;
		const blocks = this.#loginBlocks.limiter;
		const { value: previous } = await this.#run(() => blocks.get(key));
		const n = (previous && previous.msBeforeNext > 0 ? previous.consumedPoints : 0) + 1;
		const blockS = Math.min(blockDurationS * 2 ** (n - 1), maxBlockDurationS);
		await this.#run(() => blocks.set(key, n, blockS + maxBlockDurationS));
		await this.#run(() => limiter.block(key, blockS));
		return refusedDecision(points, blockS * 1000, "login");
	}

	/**
	 * `loginFailed` as the gateway calls it after a wrong password. Fail-open: when the failure
	 * cannot be counted (the store failed and its memory fallback could not answer either), the
	 * sign-in still gets its 401 and nobody is blocked, since refusing sign-ins over a broken
	 * counter would lock every user out. The error is logged and counted, since uncounted
	 * failures mean the brute-force limit is not holding.
	 */
	async recordLoginFailure(email: string, ip: string): Promise<RateLimitDecision | undefined> {
		try {
			return await this.loginFailed(email, ip);
		} catch (err) {
			incrementIn(this.#metrics, "loginFailuresUncounted");
			const log = this.#logger?.error ?? this.#logger?.warn;
			log?.call(this.#logger, "Rate limiter: a failed sign-in could not be counted; the brute-force limit misses it", err);
			return undefined;
		}
	}

	/** After a successful login: clears the failure count (and the back-off) for email+ip. */
	async loginSucceeded(email: string, ip: string): Promise<void> {
		const key = this.#loginKey(email, ip);
		await Promise.all([this.#run(() => this.#loginFailures.limiter.delete(key)), this.#run(() => this.#loginBlocks.limiter.delete(key))]);
	}

	/** Response headers for a decision: RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset (seconds), and Retry-After when refused. */
	static headers(decision: RateLimitDecision): Record<string, string> {
		const headers: Record<string, string> = {
			"RateLimit-Limit": String(decision.limit),
			"RateLimit-Remaining": String(decision.remaining),
			"RateLimit-Reset": String(decision.resetS)
		};
		if (!decision.allowed) headers["Retry-After"] = String(decision.retryAfterS ?? Math.max(1, decision.resetS));
		return headers;
	}

	/** Throws chatmesh's RateLimitedError (from lib/errors.ts) carrying retryAfter and scope when the decision refuses. */
	static assertAllowed(decision: RateLimitDecision): void {
		if (decision.allowed) return;
		throw new RateLimitedError(decision.retryAfterS ?? Math.max(1, decision.resetS), { scope: decision.scope });
	}
}
