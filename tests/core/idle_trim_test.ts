import assert from "node:assert/strict";
import { startIdleTrim, trimMemory } from "../../src/core/idle_trim.ts";

Deno.test("trimMemory() collects garbage the heap grew for and gives it back", () => {
  let junk: { i: number; s: string }[] | undefined = [];
  for (let i = 0; i < 1_000_000; i++) junk.push({ i, s: `x${i}` });
  junk = undefined;
  const before = Deno.memoryUsage().heapTotal;
  trimMemory();
  const after = Deno.memoryUsage().heapTotal;
  assert.ok(before - after > 32 * 1024 * 1024, `heap ${before} → ${after}`);
});

Deno.test("startIdleTrim() trims once per quiet spell after work, and only when memory grew", async () => {
  let activity = 0;
  let rss = 100;
  let busy = false;
  const trims: number[] = [];
  // Each check reads the activity once: wait for the next check to have run (the first read is at start).
  let seen: () => void = () => {};
  const check = () => new Promise<void>((resolve) => (seen = resolve));
  // The checks' interval does not keep a process alive: this does, for the test.
  const keepAlive = setTimeout(() => {}, 60_000);
  const stop = startIdleTrim({
    activity: () => {
      queueMicrotask(seen);
      return activity;
    },
    rss: () => rss,
    busy: () => busy,
    minGrowth: 50,
    intervalMs: 5,
    trim: () => {
      trims.push(activity);
      rss = 110;
    },
  });
  try {
    await check();
    await check();
    assert.deepEqual(trims, [], "no work yet: nothing to trim");
    activity = 1; // work, and memory grew
    rss = 200;
    await check(); // activity seen moving
    assert.deepEqual(trims, []);
    await check(); // quiet for one interval: trimmed
    assert.deepEqual(trims, [1]);
    await check();
    await check();
    assert.deepEqual(trims, [1], "once per quiet spell");
    activity = 2; // more work, but memory stayed near what the trim left
    rss = 120;
    await check();
    await check();
    assert.deepEqual(trims, [1], "too little growth to be worth a collection");
    activity = 3;
    rss = 300;
    await check();
    assert.deepEqual(trims, [1], "not while work is arriving");
    activity = 4;
    await check();
    assert.deepEqual(trims, [1]);
    await check();
    assert.deepEqual(trims, [1, 4]);
    activity = 5; // work, then a long upload that writes nothing: no trim while it lasts
    rss = 400;
    await check();
    busy = true;
    await check();
    await check();
    await check();
    assert.deepEqual(trims, [1, 4], "not while busy");
    busy = false;
    await check(); // the quiet interval starts now
    assert.deepEqual(trims, [1, 4]);
    await check();
    assert.deepEqual(trims, [1, 4, 5]);
  } finally {
    stop();
    clearTimeout(keepAlive);
  }
});
