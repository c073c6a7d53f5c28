/** Durations ("30s", "5m", "1h30m", "4d", "250ms") and sizes ("10KB", "50MB", "1GiB") as written in config. */

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/** The longest wait a JavaScript timer can make (2^31 − 1 ms, about 24.8 days); Deno fires a longer one after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
/** Why a duration waited out with a timer is refused: the text of both the config and the factory check. */
export const TIMER_LIMIT_TEXT = `at most ${MAX_TIMER_MS} ms ("24d" fits), the longest wait a timer can make`;

/**
 * Parses a duration given to a factory in config.ts; a bad one is a TypeError naming the factory and option.
 * With `timer`, the duration is waited out with a timer and must be at most 2^31 − 1 ms.
 */
export function optionDuration(
  factory: string,
  option: string,
  input: string | number,
  opts: { timer?: boolean } = {},
): number {
  let ms: number;
  try {
    ms = parseDuration(input);
  } catch {
    throw new TypeError(
      `${factory}: ${option}: expected a duration like "30s" or "5m", got ${JSON.stringify(input)}`,
    );
  }
  if (opts.timer && ms > MAX_TIMER_MS) {
    throw new TypeError(`${factory}: ${option}: ${TIMER_LIMIT_TEXT}, got ${JSON.stringify(input)}`);
  }
  return ms;
}

/** Parses a duration into milliseconds; a bare number is milliseconds. Throws RangeError on bad input. */
export function parseDuration(input: string | number): number {
  if (typeof input === "number") {
    if (!Number.isFinite(input) || input < 0) throw new RangeError(`Invalid duration "${input}"`);
    return input;
  }
  const s = input.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Number(s);
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy;
  let total = 0;
  let pos = 0;
  for (let m; (m = re.exec(s));) {
    total += Number(m[1]) * DURATION_UNITS[m[2]];
    pos = re.lastIndex;
  }
  if (pos === 0 || pos !== s.length) throw new RangeError(`Invalid duration "${input}"`);
  return total;
}

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
};

/** Parses a size into bytes (binary multiples: 1KB = 1024). Throws RangeError on bad input. */
export function parseSize(input: string | number): number {
  if (typeof input === "number") {
    if (!Number.isInteger(input) || input < 0) throw new RangeError(`Invalid size "${input}"`);
    return input;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(input);
  const unit = m ? SIZE_UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new RangeError(`Invalid size "${input}"`);
  return Math.floor(Number(m[1]) * unit);
}
