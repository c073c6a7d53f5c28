/**
 * Rates kept in Redis, so every Ferry node sees the same rate: one Lua script does the read, the smoothing
 * step of ./rate_limit.ts and the write atomically, with Redis's own clock (TIME), so nodes' clocks do not
 * matter. A rate lives in a hash (`rate`, `time`, `epoch`), unique values in a set beside it; both expire a
 * few periods after the last recorded event.
 * TRUSTS: the Redis server (its clock and its replies).
 */

import type { RateEvent, RateResult, RateStore } from "./rate_limit.ts";
import { ttlSeconds } from "./rate_limit.ts";
import { RedisScript, type RedisService } from "./redis_service.ts";
import { redisService } from "./services.ts";

// KEYS[1] rate hash, KEYS[2] unique-value set.
// ARGV count, period (s), limit, mode, unique value ("" for none), ttl (s), has-unique ("1"/"0"), and a
// clock reading in seconds that replaces TIME (tests only; "" in service).
const SCRIPT = new RedisScript(`
local now
if ARGV[8] ~= '' then
  now = tonumber(ARGV[8])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local count = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local mode = ARGV[4]
local uniq = ARGV[5]
local ttl = tonumber(ARGV[6])
local hasUnique = ARGV[7] == '1'
if mode == 'readonly' then count = 0 end
local h = redis.call('HMGET', KEYS[1], 'rate', 'time', 'epoch')
local prevRate = tonumber(h[1])
local epoch = tonumber(h[3]) or math.floor(now)
local resetSeen = false
if hasUnique then
  if prevRate == nil or h[3] == false or math.floor(now) > epoch + period then
    epoch = math.floor(now)
    resetSeen = true
  elseif redis.call('SISMEMBER', KEYS[2], uniq) == 1 then
    count = 0
  end
end
local rate
if prevRate == nil then
  rate = count
else
  local iOverP = (now - tonumber(h[2])) / period
  if iOverP < 1e-9 then iOverP = 1e-9 end
  local a = math.exp(-iOverP)
  rate = (1 - a) * count / iOverP + a * prevRate
end
local over = rate >= limit
if mode == 'strict' or (mode == 'leaky' and not over) then
  redis.call('HSET', KEYS[1], 'rate', string.format('%.17g', rate), 'time', string.format('%.17g', now),
    'epoch', string.format('%.17g', epoch))
  redis.call('EXPIRE', KEYS[1], ttl)
  if hasUnique then
    if resetSeen then redis.call('DEL', KEYS[2]) end
    redis.call('SADD', KEYS[2], uniq)
    redis.call('EXPIRE', KEYS[2], ttl)
  end
end
return { string.format('%.17g', rate), over and 1 or 0 }
`);

/** Rates in Redis, shared by every node using the same server. */
export class RedisRateStore implements RateStore {
  readonly #redis?: RedisService;
  readonly #prefix: string;
  readonly #clock?: () => number;

  /**
   * Uses `redis`, or the running Ferry's Redis at call time; keys start with `prefix` (default "ferry:rl:").
   * `clock` (seconds) replaces Redis's TIME: for tests that replay recorded event times.
   */
  constructor(opts: { redis?: RedisService; prefix?: string; clock?: () => number } = {}) {
    this.#redis = opts.redis;
    this.#prefix = opts.prefix ?? "ferry:rl:";
    this.#clock = opts.clock;
  }

  async update(event: RateEvent, opts: { signal?: AbortSignal } = {}): Promise<RateResult> {
    const redis = this.#redis ?? redisService();
    if (!redis) throw new Error("Redis is not configured (redis.servers)");
    const key = this.#prefix + event.key;
    const reply = await redis.evalScript(SCRIPT, [key, key + ":unique"], [
      String(event.count),
      String(event.periodMs / 1000),
      String(event.limit),
      event.mode,
      event.unique ?? "",
      String(ttlSeconds(event.periodMs)),
      event.unique === undefined ? "0" : "1",
      this.#clock ? String(this.#clock()) : "",
    ], opts);
    if (!Array.isArray(reply) || reply.length !== 2) throw new Error("unexpected reply from the rate script");
    const rate = Number(reply[0]);
    return { rate, limit: event.limit, over: Number(reply[1]) === 1 };
  }
}
