/**
 * Redis lookups in Exim's sense (`${lookup redis{…}}`): set membership (SISMEMBER), a hash field (HGET), a
 * plain key (GET), or any command. Integer replies read as booleans and arrays as lists. A Redis error or
 * timeout defers (451 4.3.0, logged with the lookup) unless the lookup says `failOpen`. A lookup is made in
 * config.ts and used as a host list (`.hostList()`), in policy (`await lookup.get(value)`), or as a limit.
 */

import type { HostListCallOptions, HostListSubject } from "../core/host_list.ts";
import { SmtpError } from "../core/reply.ts";
import { optionDuration } from "../core/units.ts";
import { errorMessage } from "../core/error_message.ts";
import { markNeedsRedis } from "../core/needs_redis.ts";
import type { RedisReply } from "./redis_service.ts";
import { redisService } from "./services.ts";

/** What a lookup answers: a flag (integer replies), a string, a list (array replies), or null (no key). */
export type RedisValue = boolean | string | string[] | null;

/** Options every lookup takes. */
export interface RedisLookupOptions {
  /** On a Redis error or timeout answer "not found" (false/null) instead of deferring (default false) */
  failOpen?: boolean;
  /** Keep answers this long ("10s"); default: no cache. Errors are never cached. */
  cache?: string | number;
}

const CACHE_MAX = 10_000;

/** One Redis lookup: builds its command from the value looked up. */
export class RedisLookup {
  readonly #command: (value: string) => string[];
  readonly #failOpen: boolean;
  readonly #cacheMs: number;
  readonly #cache = new Map<string, { expires: number; value: RedisValue }>();

  constructor(command: (value: string) => string[], opts: RedisLookupOptions = {}) {
    this.#command = command;
    this.#failOpen = opts.failOpen ?? false;
    this.#cacheMs = opts.cache === undefined ? 0 : optionDuration("redis lookup", "cache", opts.cache);
  }

  /** Looks `value` up. Throws SmtpError 451 4.3.0 when Redis fails (unless failOpen). */
  async get(value: string, opts: { signal?: AbortSignal } = {}): Promise<RedisValue> {
    const args = this.#command(value);
    const hit = this.#cacheMs > 0 ? this.#cache.get(args.join("\0")) : undefined;
    if (hit && hit.expires > Date.now()) return hit.value;
    const redis = redisService();
    const what = `redis lookup ${args.map(quoteArg).join(" ")}`;
    let reply: RedisReply;
    try {
      if (!redis) throw new Error("Redis is not configured (redis.servers)");
      reply = await redis.command(args, opts);
    } catch (err) {
      const why = `${what}: ${errorMessage(err)}`;
      if (this.#failOpen) {
        redis?.log(`${why} (failOpen: treated as not found)`);
        return null;
      }
      redis?.log(`${why} (deferred)`);
      throw new SmtpError(451, "4.3.0", "Temporary local problem, please try again later", {
        cause: new Error(why, { cause: err }),
      });
    }
    const result = toValue(reply);
    if (this.#cacheMs > 0) {
      if (this.#cache.size >= CACHE_MAX) this.#cache.delete(this.#cache.keys().next().value!);
      this.#cache.set(args.join("\0"), { expires: Date.now() + this.#cacheMs, value: result });
    }
    return result;
  }

  /** True when the lookup finds something: a true flag, a non-empty string or list. */
  async has(value: string, opts: { signal?: AbortSignal } = {}): Promise<boolean> {
    return truthy(await this.get(value, opts));
  }

  /**
   * This lookup as a host list (a HostListFn): the client's IP address (default) or name is the value looked
   * up; the host list's signal (its deadline) is passed on to the lookup.
   */
  hostList(
    on: "ip" | "name" = "ip",
  ): (subject: HostListSubject, opts?: Partial<HostListCallOptions>) => Promise<boolean> {
    const has = (value: string, signal?: AbortSignal) => this.has(value, { signal });
    // Given as a host list in config.ts without `redis`, every call would defer: a config error instead.
    return markNeedsRedis(
      async function redis_host_list(subject: HostListSubject, opts?: Partial<HostListCallOptions>) {
        const value = subject[on];
        return value === undefined ? false : await has(value, opts?.signal);
      },
      "a Redis lookup",
    );
  }
}

/** `SISMEMBER key value`: is the value a member of the set? */
export function redisSet(key: string, opts?: RedisLookupOptions): RedisLookup {
  return new RedisLookup((v) => ["SISMEMBER", key, v], opts);
}

/** `HGET key value`: the value names a field of the hash. */
export function redisHash(key: string, opts?: RedisLookupOptions): RedisLookup {
  return new RedisLookup((v) => ["HGET", key, v], opts);
}

/** `GET prefix+value` (or the key a function makes of the value): a plain key. */
export function redisKey(key: string | ((value: string) => string), opts?: RedisLookupOptions): RedisLookup {
  return new RedisLookup((v) => ["GET", typeof key === "function" ? key(v) : key + v], opts);
}

/** Any command, built from the value (e.g. `(ip) => ["SMEMBERS", "routes:" + ip]`). */
export function redisLookup(command: (value: string) => string[], opts?: RedisLookupOptions): RedisLookup {
  return new RedisLookup(command, opts);
}

/** Integer replies as booleans, arrays as lists of strings, a map (HGETALL) as field, value, field, value…. */
export function toValue(reply: RedisReply): RedisValue {
  if (reply === null || reply === undefined) return null;
  if (typeof reply === "number") return reply !== 0;
  if (Array.isArray(reply)) return flatten(reply);
  if (typeof reply === "object") return flatten(Object.entries(reply).flat());
  return String(reply);
}

function flatten(list: RedisReply[]): string[] {
  const out: string[] = [];
  for (const x of list) {
    if (Array.isArray(x)) out.push(...flatten(x));
    else if (x !== null && typeof x === "object") out.push(...flatten(Object.entries(x).flat()));
    else if (x !== null && x !== undefined) out.push(String(x));
  }
  return out;
}

function truthy(v: RedisValue): boolean {
  if (Array.isArray(v)) return v.length > 0;
  return v === true || (typeof v === "string" && v !== "");
}

function quoteArg(a: string): string {
  return /^[\x21-\x7e]+$/.test(a) && !a.includes('"') ? a : JSON.stringify(a);
}
