import assert from "node:assert/strict";
import { optionDuration, parseDuration, parseSize } from "../../src/core/units.ts";

Deno.test("parseDuration() reads units and combinations into milliseconds", () => {
  const cases: [string | number, number][] = [
    ["250ms", 250],
    ["30s", 30_000],
    ["5m", 300_000],
    ["2h", 7_200_000],
    ["4d", 345_600_000],
    ["1w", 604_800_000],
    ["1h30m", 5_400_000],
    ["1m30s500ms", 90_500],
    ["1.5s", 1500],
    [" 10s ", 10_000],
    ["0s", 0],
    ["1500", 1500],
    [2000, 2000],
    [0, 0],
  ];
  for (const [input, ms] of cases) assert.equal(parseDuration(input), ms, String(input));
});

Deno.test("parseDuration() refuses unknown units, signs, gaps and junk", () => {
  for (
    const bad of ["", " ", "s", "-5s", "5 s", "5x", "5mm", "1m5", "30sec", "5S", "1h 30m", "ms", "abc", "1e3"]
  ) {
    assert.throws(() => parseDuration(bad), RangeError, JSON.stringify(bad));
  }
  for (const bad of [-1, NaN, Infinity]) assert.throws(() => parseDuration(bad), RangeError, String(bad));
});

Deno.test("parseSize() reads binary multiples, case-insensitively", () => {
  const cases: [string | number, number][] = [
    ["0", 0],
    ["100", 100],
    ["100B", 100],
    ["10K", 10_240],
    ["10KB", 10_240],
    ["10kib", 10_240],
    ["50MB", 50 * 1024 * 1024],
    ["1GiB", 1024 ** 3],
    ["1.5MB", 1.5 * 1024 * 1024],
    [" 2 mb ", 2 * 1024 * 1024],
    [4096, 4096],
  ];
  for (const [input, bytes] of cases) assert.equal(parseSize(input), bytes, String(input));
});

Deno.test("parseSize() refuses unknown units, negative and fractional numbers", () => {
  for (const bad of ["", "MB", "-1", "1TB", "10 X", "1.2.3", "ten", "1e6", "5MBB"]) {
    assert.throws(() => parseSize(bad), RangeError, JSON.stringify(bad));
  }
  for (const bad of [-1, 1.5, NaN, Infinity]) assert.throws(() => parseSize(bad), RangeError, String(bad));
});

Deno.test("optionDuration() with timer refuses more than a timer can wait, naming the factory and option", () => {
  assert.equal(optionDuration("rspamd", "timeout", "24d", { timer: true }), 24 * 86_400_000);
  assert.throws(
    () => optionDuration("rspamd", "timeout", "30d", { timer: true }),
    (e) => e instanceof TypeError && /^rspamd: timeout: at most 2147483647 ms \("24d" fits\)/.test(e.message),
  );
  // A period that is not waited out with a timer (a rate limit's) may be longer.
  assert.equal(optionDuration("ratelimit", "period", "30d"), 30 * 86_400_000);
});
