/**
 * Exim's `ratelimit` condition as a check: `ratelimit({ limit, period, per, mode, unique, key, count })`.
 * `per` says what is counted and where: `conn` once per connection (connect stage), `mail` once per message
 * (MAIL), `rcpt` per recipient (RCPT), `byte` the message's size (data stage), `cmd` every time the check runs
 * at its `stage` (helo, mail, rcpt, data or prdr; default rcpt). The rate (./rate_limit.ts) is kept in Redis when `redis` is configured
 * (shared by every node), else in this process. The result is `c.get("ratelimit")[name]`; over the limit
 * the check defers (default), rejects, or only records (`over: "accept"`), as the config says.
 */

import type { Check, CheckResult, CheckState, Verdict } from "../check.ts";
import { defer, reject } from "../check.ts";
import type { BaseContext, DataContext, Stage } from "../context.ts";
import { optionDuration } from "../../core/units.ts";
import { errorMessage } from "../../core/error_message.ts";
import { MemoryRateStore, type RateMode, type RateResult, type RateStore } from "../rate_limit.ts";
import { RedisRateStore } from "../rate_store_redis.ts";
import { redisService } from "../services.ts";
import { markNeedsRedis } from "../../core/needs_redis.ts";

/** What is counted. */
export type RatePer = "conn" | "mail" | "rcpt" | "byte" | "cmd";

/** A rate-limit result as kept in the context. */
export interface RateLimitOutcome extends RateResult {
  /** The key measured (by default the client's IP address) */
  key: string;
}

declare module "../variables.ts" {
  interface VariableMap {
    ratelimit: Record<string, RateLimitOutcome>;
  }
}

type Ctx = BaseContext & Partial<Pick<DataContext, "messageSize" | "size">>;
type Value<T> = T | ((c: Ctx) => T | Promise<T>);

/** Options of `ratelimit()`. */
export interface RateLimitOptions {
  /** Names the limit in the context, logs and store keys (default `per_<per>`); give each limit its own */
  name?: string;
  /** Events (octets for per byte) per period; a function may look it up (undefined: no limit, not counted) */
  limit: Value<number | undefined>;
  /** The period the rate is expressed in ("1h") */
  period: string | number;
  per: RatePer;
  /** `leaky` (default: only events under the limit count), `strict` (every event counts) or `readonly` */
  mode?: RateMode;
  /** Count each distinct value once per period (Exim's `unique=`), e.g. `(c) => c.recipient.address` */
  unique?: (c: Ctx) => string | undefined | Promise<string | undefined>;
  /** What the rate is kept for (default: the client's IP address) */
  key?: (c: Ctx) => string | Promise<string>;
  /** Weight of an event (default 1; for per byte the message size) */
  count?: Value<number>;
  /** For `per: "cmd"`: the stage that counts (default rcpt) */
  stage?: Exclude<Stage, "connect">;
  /** Over the limit: `defer` (451 4.7.1, default), `reject` (550 5.7.1), or `accept` (only record) */
  over?: "defer" | "reject" | "accept";
  /** Where rates live: `redis` when `redis` is configured (default), else `memory` */
  store?: "memory" | "redis";
  /** When the store fails: `defer` (451 4.3.0, default) or `accept` */
  failOpen?: boolean;
}

/** Creates a rate-limit check. */
export function ratelimit(opts: RateLimitOptions): Check {
  const periodMs = optionDuration("ratelimit", "period", opts.period);
  if (!(periodMs > 0)) throw new TypeError(`ratelimit: period must be more than zero, got "${opts.period}"`);
  const per = opts.per;
  if (!["conn", "mail", "rcpt", "byte", "cmd"].includes(per)) {
    throw new TypeError(`ratelimit: per must be conn, mail, rcpt, byte or cmd, got ${JSON.stringify(per)}`);
  }
  if (opts.mode !== undefined && !["leaky", "strict", "readonly"].includes(opts.mode)) {
    throw new TypeError(
      `ratelimit: mode must be leaky, strict or readonly, got ${JSON.stringify(opts.mode)}`,
    );
  }
  if (typeof opts.limit !== "function" && !(typeof opts.limit === "number" && opts.limit >= 0)) {
    throw new TypeError(`ratelimit: limit must be a number of 0 or more, or a function`);
  }
  const mode = opts.mode ?? "leaky";
  const name = opts.name ?? `per_${per}`;
  const memory = new MemoryRateStore();
  // Redis comes from the services at start; a check used without them (tests) finds the running one.
  let shared: RateStore | undefined;
  const store = (): RateStore => {
    if (opts.store === "memory") return memory;
    if (shared) return shared;
    if (opts.store === "redis" || redisService()) return new RedisRateStore();
    return memory;
  };
  const value = async <T>(v: Value<T>, c: Ctx): Promise<T> =>
    typeof v === "function" ? await (v as (c: Ctx) => T | Promise<T>)(c) : v;

  async function measure(c: Ctx): Promise<Verdict | undefined> {
    const limit = await value(opts.limit, c);
    if (limit === undefined) return undefined;
    const key = opts.key ? await opts.key(c) : c.client.ip;
    const unique = opts.unique ? await opts.unique(c) : undefined;
    const count = opts.count !== undefined
      ? await value(opts.count, c)
      : per === "byte"
      ? c.messageSize ?? c.size ?? 0
      : 1;
    // Exim's key: period, per, unique, key; plus the name so two limits on one key stay apart.
    const storeKey = `${name}/${periodMs / 1000}s/per_${per}/${unique !== undefined ? "unique/" : ""}${key}`;
    let result: RateResult;
    try {
      result = await store().update({ key: storeKey, periodMs, limit, mode, count, unique }, {
        signal: c.signal,
      });
    } catch (err) {
      const why = `ratelimit ${name} for ${key}: ${errorMessage(err)}`;
      if (opts.failOpen) {
        c.log(`${why} (failOpen: not limited)`);
        return undefined;
      }
      // The why (store, server address) goes to the log only; the client gets the usual local-problem text.
      c.log(`${why} (deferred)`);
      return defer("Temporary local problem, please try again later", { code: 451, enhanced: "4.3.0" });
    }
    const outcomes = { ...(c.get("ratelimit") ?? {}), [name]: { ...result, key } };
    c.set("ratelimit", outcomes, { scope: per === "conn" ? "connection" : "message" });
    if (!result.over) return undefined;
    const text = `ratelimit ${name}: ${key} at ${result.rate.toFixed(1)}/${opts.period} (limit ${limit})`;
    if (opts.over === "accept") {
      c.log(`${text}: over the limit (recorded only)`);
      return undefined;
    }
    c.log(text);
    return opts.over === "reject"
      ? reject("Rate limit exceeded", { code: 550, enhanced: "5.7.1" })
      : defer("Rate limit exceeded, try again later", { code: 451, enhanced: "4.7.1" });
  }

  // Exim keeps a per_conn result for the rest of the connection: one event per connection.
  const check: Check = {
    name: `ratelimit ${name}`,
    open(services) {
      if (services.redis && opts.store !== "memory") shared = new RedisRateStore({ redis: services.redis });
    },
  };
  // Without `redis` every event would fail the store: a config error at start instead.
  if (opts.store === "redis") markNeedsRedis(check, 'ratelimit store "redis"');
  if (per === "conn") {
    check.connect = (c): CheckResult => measure(c);
    return check;
  }
  const stage = per === "mail"
    ? "mail"
    : per === "rcpt"
    ? "rcpt"
    : per === "byte"
    ? "data"
    : opts.stage ?? "rcpt";
  // Every HELO/EHLO counts (a per-connection method: it runs before any message).
  if (stage === "helo") {
    check.helo = (c): CheckResult => measure(c);
    return check;
  }
  check.message = (): CheckState => {
    const state: CheckState = {};
    if (stage === "mail") state.mail = (c) => measure(c);
    if (stage === "rcpt") state.rcpt = (c) => measure(c);
    // With PRDR the data stage still runs once for the message (after the prdr stage).
    if (stage === "data") state.data = (c) => measure(c);
    if (stage === "prdr") state.prdr = (c) => measure(c);
    return state;
  };
  return check;
}
