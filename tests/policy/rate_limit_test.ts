import assert from "node:assert/strict";
import { MemoryRateStore, rateStep, smoothedRate } from "../../src/policy/rate_limit.ts";
import { RedisRateStore } from "../../src/policy/rate_store_redis.ts";
import { RedisService } from "../../src/policy/redis_service.ts";
import { TestRedis } from "../helpers/redis.ts";

const base = { key: "k", periodMs: 10_000, limit: 5, count: 1 } as const;

Deno.test("smoothedRate(): one period later the old rate weighs e^-1; events close together add up", () => {
  assert.ok(Math.abs(smoothedRate(10, 10, 10, 0) - 10 / Math.E) < 1e-9);
  assert.ok(Math.abs(smoothedRate(3, 0.001, 10, 1) - 4) < 1e-3);
  // Two events at the same instant add up (Exim would drop the second: see smoothedRate()).
  assert.ok(Math.abs(smoothedRate(3, 0, 10, 1) - 4) < 1e-6);
});

Deno.test("rateStep(): a new key starts at count; readonly counts 0 and records nothing", () => {
  assert.deepEqual(rateStep(undefined, { ...base, mode: "leaky", count: 7 }, 100).result, {
    rate: 7,
    limit: 5,
    over: true,
  });
  const ro = rateStep({ rate: 4, time: 100, epoch: 100 }, { ...base, mode: "readonly" }, 100);
  assert.equal(ro.record, undefined);
  assert.ok(Math.abs(ro.result.rate - 4) < 1e-6);
  assert.equal(ro.result.over, false);
  assert.equal(rateStep(undefined, { ...base, mode: "readonly" }, 100).result.rate, 0);
});

Deno.test("MemoryRateStore: leaky stops recording over the limit, strict keeps recording", async () => {
  let now = 1000;
  const leaky = new MemoryRateStore({ now: () => now });
  const strict = new MemoryRateStore({ now: () => now });
  const seq = [];
  for (let i = 0; i < 10; i++) {
    now += 0.001;
    const l = await leaky.update({ ...base, mode: "leaky" });
    const s = await strict.update({ ...base, mode: "strict" });
    seq.push([l.over, s.over]);
  }
  assert.deepEqual(seq.map(([l]) => l), [false, false, false, false, false, true, true, true, true, true]);
  // Half a period later the leaky client is under again (its rate stayed near 4), the strict one is not.
  now += 5;
  assert.equal((await leaky.update({ ...base, mode: "leaky" })).over, false);
  assert.equal((await strict.update({ ...base, mode: "strict" })).over, true);
});

Deno.test("MemoryRateStore: per-byte counts weigh events by size; a key idle for many periods starts over", async () => {
  let now = 1000;
  const store = new MemoryRateStore({ now: () => now });
  const bytes = { key: "b", periodMs: 60_000, limit: 1_000_000, mode: "strict" as const };
  assert.equal((await store.update({ ...bytes, count: 600_000 })).over, false);
  now += 1;
  assert.equal((await store.update({ ...bytes, count: 600_000 })).over, true);
  now += 3600;
  assert.equal((await store.update({ ...bytes, count: 10 })).rate, 10);
});

Deno.test("RedisRateStore: keys expire a few periods after the last event; two stores share one rate", async () => {
  const redis = await TestRedis.start();
  const service = new RedisService({ servers: [{ url: redis.url }], timeoutMs: 2000, log: () => {} });
  try {
    await service.open();
    const a = new RedisRateStore({ redis: service });
    const b = new RedisRateStore({ redis: service });
    const ev = { key: "ip:192.0.2.1", periodMs: 60_000, limit: 3, mode: "strict" as const, count: 1 };
    assert.equal((await a.update(ev)).over, false);
    assert.equal((await b.update(ev)).over, false);
    assert.equal((await a.update(ev)).over, false);
    assert.equal((await b.update(ev)).over, true);
    const ttl = Number((await redis.command("TTL", "ferry:rl:ip:192.0.2.1")).replace(/^:/, ""));
    assert.ok(ttl > 60 && ttl <= 300, `ttl ${ttl}`);
  } finally {
    await service.close();
    await redis.cleanup();
  }
});
