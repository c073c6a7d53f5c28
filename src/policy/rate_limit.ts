/**
 * Rate limits with Exim's `ratelimit` semantics: a smoothed rate per key, an exponentially weighted moving
 * average adjusted for the interval since the last event: `rate = (1−a)·count·p/i + a·rate`, `a = e^(−i/p)`;
 * a new key starts at `count`; the client is over the limit when `rate ≥ limit`. In `leaky` mode only events
 * under the limit are recorded, in `strict` mode every event is, `readonly` records nothing (and counts 0).
 * With `unique`, an event whose value was already seen this period counts 0.
 * Stores: `MemoryRateStore` (this node) and `RedisRateStore` (shared by every node, ./rate_store_redis.ts).
 */

/** How events are recorded. */
export type RateMode = "leaky" | "strict" | "readonly";

/** One event to measure. */
export interface RateEvent {
  /** What the rate is kept for (e.g. the client's IP address, with the limit's name) */
  key: string;
  /** The period the rate is expressed in, in ms */
  periodMs: number;
  limit: number;
  mode: RateMode;
  /** Weight of this event (1; the size for per-byte limits) */
  count: number;
  /** Count each distinct value once per period */
  unique?: string;
}

/** What a rate-limit check found. */
export interface RateResult {
  /** The smoothed rate, in events (or octets) per period */
  rate: number;
  limit: number;
  /** True when `rate ≥ limit` */
  over: boolean;
}

/** Where rates are kept. */
export interface RateStore {
  /** Measures one event and records it as the mode says. */
  update(event: RateEvent, opts?: { signal?: AbortSignal }): Promise<RateResult>;
}

/** A stored rate: the smoothed rate, the time of the last recorded event (s), and the unique-value epoch. */
export interface RateRecord {
  rate: number;
  time: number;
  epoch: number;
  seen?: Set<string>;
}

/**
 * Exim's smoothing step: the new rate after `count` events `interval` seconds after the last record. An
 * interval of (nearly) zero is taken as 1e-9 of a period, so two events at the same instant add up. (Exim
 * clamps only after computing `a`, so at an interval of exactly zero it drops the event; with its
 * microsecond clock that almost never happens, with a millisecond clock it would happen all the time.)
 */
export function smoothedRate(prev: number, intervalS: number, periodS: number, count: number): number {
  const iOverP = Math.max(intervalS / periodS, 1e-9);
  const a = Math.exp(-iOverP);
  return (1 - a) * count / iOverP + a * prev;
}

/** Seconds since the epoch with sub-millisecond resolution. */
export function preciseNow(): number {
  return (performance.timeOrigin + performance.now()) / 1000;
}

/**
 * The whole decision for one event at time `now` (seconds): returns the result and the record to store, or
 * no record when the mode says not to record. Pure, so the memory store and the tests share it; the Redis
 * store runs the same steps in Lua.
 */
export function rateStep(
  prev: RateRecord | undefined,
  event: RateEvent,
  now: number,
): { result: RateResult; record?: RateRecord } {
  const periodS = event.periodMs / 1000;
  let count = event.mode === "readonly" ? 0 : event.count;
  // As Exim: the unique-value epoch is whole seconds, and the set is reset once the whole seconds of now
  // are more than a period past it.
  let epoch = prev?.epoch ?? Math.floor(now);
  let seen = prev?.seen;
  if (event.unique !== undefined) {
    if (!prev || !seen || Math.floor(now) > epoch + periodS) {
      epoch = Math.floor(now);
      seen = new Set();
    }
    if (seen.has(event.unique)) count = 0;
  }
  const rate = prev ? smoothedRate(prev.rate, now - prev.time, periodS, count) : count;
  const over = rate >= event.limit;
  const result = { rate, limit: event.limit, over };
  const record = event.mode === "strict" || (event.mode === "leaky" && !over);
  if (!record) return { result };
  if (event.unique !== undefined) seen = new Set(seen).add(event.unique);
  return { result, record: { rate, time: now, epoch, seen } };
}

/** Rates kept in this process (lost at restart, not shared). Keys idle for a few periods are forgotten. */
export class MemoryRateStore implements RateStore {
  readonly #records = new Map<string, RateRecord & { expires: number }>();
  readonly #now: () => number;
  #sweepAt = 0;

  /** `now` returns seconds (tests pass a fake clock). */
  constructor(opts: { now?: () => number } = {}) {
    this.#now = opts.now ?? preciseNow;
  }

  update(event: RateEvent): Promise<RateResult> {
    const now = this.#now();
    this.#sweep(now);
    const prev = this.#records.get(event.key);
    const { result, record } = rateStep(prev && prev.expires > now ? prev : undefined, event, now);
    if (record) this.#records.set(event.key, { ...record, expires: now + ttlSeconds(event.periodMs) });
    return Promise.resolve(result);
  }

  #sweep(now: number): void {
    if (now < this.#sweepAt) return;
    this.#sweepAt = now + 60;
    for (const [k, r] of this.#records) if (r.expires <= now) this.#records.delete(k);
  }
}

/**
 * How long a key is kept after its last recorded event: after 5 periods the old rate weighs e^−5 < 1 % and
 * a new key starting at `count` gives the same decision to within that.
 */
export function ttlSeconds(periodMs: number): number {
  return Math.max(1, Math.ceil(5 * periodMs / 1000));
}
