import assert from "node:assert/strict";
import {
  compileRetryConfig,
  nextRetry,
  parseRetryRules,
  type RetryRuleSpec,
} from "../../src/outbound/retry_rules.ts";

const M = 60_000;
const H = 60 * M;
const D = 24 * H;
const T0 = Date.UTC(2026, 0, 1);
const RULES: RetryRuleSpec[] = [
  { every: "15m", until: "2h" },
  { every: "1h", factor: 1.5, until: "16h" },
  { every: "6h", until: "4d" },
];

Deno.test("nextRetry() uses the first rule's fixed interval right after the first failure", () => {
  assert.deepEqual(nextRetry(RULES, T0, T0), { at: T0 + 15 * M });
  assert.deepEqual(nextRetry(RULES, T0, T0 + 15 * M, 15 * M), { at: T0 + 30 * M });
  assert.deepEqual(nextRetry(RULES, T0, T0 + 1 * H + 59 * M, 15 * M), { at: T0 + 2 * H + 14 * M });
});

Deno.test("nextRetry() starts a geometric rule from its every, then multiplies by its factor", () => {
  assert.deepEqual(nextRetry(RULES, T0, T0 + 2 * H, 15 * M), { at: T0 + 3 * H });
  assert.deepEqual(nextRetry(RULES, T0, T0 + 3 * H, 1 * H), { at: T0 + 4.5 * H });
  assert.deepEqual(nextRetry(RULES, T0, T0 + 4.5 * H, 1.5 * H), { at: T0 + 6.75 * H });
  assert.deepEqual(nextRetry(RULES, T0, T0 + 6.75 * H, 2.25 * H), { at: T0 + 10.125 * H });
  // without a known last interval it also starts from every
  assert.deepEqual(nextRetry(RULES, T0, T0 + 5 * H), { at: T0 + 6 * H });
});

Deno.test("nextRetry() moves to the next rule once the cutoff from the first failure passes", () => {
  // 16h after the first failure the 6h fixed rule applies, whatever the last interval was
  assert.deepEqual(nextRetry(RULES, T0, T0 + 16 * H, 3.375 * H), { at: T0 + 22 * H });
  assert.deepEqual(nextRetry(RULES, T0, T0 + 2 * D, 6 * H), { at: T0 + 2 * D + 6 * H });
});

Deno.test("nextRetry() pulls the last attempt in to the final cutoff and then gives up", () => {
  assert.deepEqual(nextRetry(RULES, T0, T0 + 3 * D + 22 * H, 6 * H), { at: T0 + 4 * D });
  assert.deepEqual(nextRetry(RULES, T0, T0 + 4 * D, 2 * H), { giveUp: true });
  assert.deepEqual(nextRetry(RULES, T0, T0 + 10 * D), { giveUp: true });
  assert.deepEqual(nextRetry([], T0, T0), { giveUp: true });
});

Deno.test("nextRetry() treats a last attempt before the first failure as the first failure", () => {
  assert.deepEqual(nextRetry(RULES, T0, T0 - 5 * M), { at: T0 + 10 * M });
});

Deno.test("parseRetryRules() accepts numbers in ms and rejects bad rules", () => {
  assert.deepEqual(parseRetryRules([{ every: 1000, until: 5000 }]), [{
    every: 1000,
    factor: 1,
    until: 5000,
  }]);
  assert.throws(() => parseRetryRules([{ every: "0s", until: "1h" }]), /every/);
  assert.throws(() => parseRetryRules([{ every: "1m", factor: 0.5, until: "1h" }]), /factor/);
  assert.throws(() => parseRetryRules([{ every: "1m", until: "2h" }, { every: "1h", until: "1h" }]), /until/);
  assert.throws(() => parseRetryRules([{ every: "soon", until: "1h" }]), RangeError);
});

Deno.test("compileRetryConfig() finds the rules of the first entry whose domain list matches", async () => {
  const config = [
    { domains: ["*.example.com", "!example.org"], rules: [{ every: "5m", until: "1h" }] },
    { domains: "*", rules: RULES },
  ];
  const retryRulesFor = compileRetryConfig(config);
  assert.deepEqual(await retryRulesFor("mx.example.com"), [{ every: 5 * M, factor: 1, until: H }]);
  assert.equal((await retryRulesFor("example.net"))?.length, 3);
  assert.equal(await compileRetryConfig([config[0]])("other.test"), undefined);
  const byFn = [{
    domains: (s: { name?: string }) => s.name === "fn.test",
    rules: [{ every: "1m", until: "2m" }],
  }];
  assert.equal((await compileRetryConfig(byFn)("fn.test"))?.[0].every, M);
});
