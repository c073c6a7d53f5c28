/**
 * A mark on configuration values that cannot work without `redis` (a rate limit with `store: "redis"`, a
 * Redis lookup given as a host list): the config loader refuses such a config when no `redis` is configured,
 * naming the value's path, instead of every message getting 451 at run time.
 */

const MARK = Symbol("ferry.needsRedis");

/** Marks `value` as needing `redis`; `what` names it in the config error (`ratelimit store "redis"`). */
export function markNeedsRedis<T extends object>(value: T, what: string): T {
  Object.defineProperty(value, MARK, { value: what, enumerable: false });
  return value;
}

/** One marked value found in a configuration, with its path (`["checks", 1]`). */
export interface RedisNeed {
  path: (string | number)[];
  what: string;
}

function isPlain(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Every marked value in `config`, searched through plain objects and arrays. */
export function findRedisNeeds(config: unknown): RedisNeed[] {
  const found: RedisNeed[] = [];
  const seen = new Set<object>();
  const walk = (value: unknown, path: (string | number)[]) => {
    if ((typeof value !== "object" && typeof value !== "function") || value === null || seen.has(value)) {
      return;
    }
    seen.add(value);
    const what = (value as { [MARK]?: unknown })[MARK];
    if (typeof what === "string") found.push({ path, what });
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, [...path, i]));
    else if (typeof value === "object" && isPlain(value)) {
      for (const [k, v] of Object.entries(value)) walk(v, [...path, k]);
    }
  };
  walk(config, []);
  return found;
}
