import assert from "node:assert/strict";
import { after, pendingDeadlines, RESOLUTION_MS } from "../../src/core/deadlines.ts";

Deno.test("after() runs a deadline no earlier than asked, and not much later", async () => {
  for (const ms of [0, 1, 30, 120]) {
    const set = performance.now();
    const ran = await new Promise<number>((resolve) => after(ms, () => resolve(performance.now())));
    const waited = ran - set;
    assert.ok(waited >= ms, `${ms} ms deadline ran after ${waited.toFixed(1)} ms`);
    assert.ok(waited < ms + RESOLUTION_MS + 500, `${ms} ms deadline ran only after ${waited.toFixed(1)} ms`);
  }
  assert.equal(pendingDeadlines(), 0);
});

Deno.test("after(): a cancelled deadline never runs; the others in its slot do; the clock stops when none is left", async () => {
  const ran: string[] = [];
  const cancelA = after(40, () => ran.push("a"));
  const last = new Promise<void>((resolve) =>
    after(40, () => {
      ran.push("b");
      resolve();
    })
  );
  const cancelC = after(40, () => ran.push("c"));
  // A later deadline, to see the cancelled one's time pass first.
  const later = new Promise<void>((resolve) => after(80, () => resolve()));
  cancelA();
  cancelA(); // twice: still only one deadline fewer
  assert.equal(pendingDeadlines(), 3);
  await last;
  cancelC(); // after its slot ran: nothing left to cancel
  assert.deepEqual(ran.sort(), ["b", "c"]);
  await later;
  assert.deepEqual(ran.sort(), ["b", "c"]);
  // Nothing pending: no interval is left running (the test's op sanitizer would fail otherwise).
  assert.equal(pendingDeadlines(), 0);
});

Deno.test("after(): a callback that cancels another deadline of the same slot keeps it from running", async () => {
  const ran: string[] = [];
  let cancelSecond = () => {};
  const done = new Promise<void>((resolve) => after(60, () => resolve()));
  after(20, () => {
    ran.push("first");
    cancelSecond();
  });
  cancelSecond = after(20, () => ran.push("second"));
  await done;
  assert.deepEqual(ran, ["first"]);
  assert.equal(pendingDeadlines(), 0);
});

Deno.test("after(): a deadline set from a callback does not delay an earlier one set before", async () => {
  const ran: string[] = [];
  const set = performance.now();
  const done = new Promise<number>((resolve) =>
    after(120, () => {
      ran.push("early");
      resolve(performance.now());
    })
  );
  // Runs first, and sets a deadline later than the pending one.
  after(10, () => {
    ran.push("first");
    after(400, () => ran.push("late"));
  });
  const at = await done;
  assert.deepEqual(ran, ["first", "early"]);
  assert.ok(at - set < 120 + 4 * RESOLUTION_MS + 200, `ran after ${(at - set).toFixed(0)} ms`);
  await new Promise<void>((resolve) => after(400, resolve));
  assert.deepEqual(ran, ["first", "early", "late"]);
  assert.equal(pendingDeadlines(), 0);
});

Deno.test("after(): a deadline that is not a finite number runs as soon as it can, and leaves no timer", async () => {
  for (const ms of [NaN, Infinity, -5]) {
    await new Promise<void>((resolve) => after(ms, resolve));
  }
  assert.equal(pendingDeadlines(), 0);
});

Deno.test("after(): cancelling many far deadlines leaves the near one to run and nothing pending", async () => {
  // Many deadlines far away, all cancelled but one near: only that one runs, and nothing is left pending.
  const cancels = Array.from({ length: 1000 }, (_, i) => after(60_000 + i * 50, () => {}));
  const near = new Promise<void>((resolve) => after(30, resolve));
  for (const cancel of cancels) cancel();
  await near;
  assert.equal(pendingDeadlines(), 0);
});

Deno.test("after(): a pending deadline wakes the process at its time, not on every tick before it", async () => {
  let wakeups = 0;
  const realTimeout = globalThis.setTimeout;
  const realInterval = globalThis.setInterval;
  type Timer = (fn: () => void, ms?: number) => number;
  const counted = (real: Timer): Timer => (fn, ms) => real(() => (wakeups++, fn()), ms);
  const g = globalThis as unknown as { setTimeout: Timer; setInterval: Timer };
  g.setTimeout = counted(realTimeout as unknown as Timer);
  g.setInterval = counted(realInterval as unknown as Timer);
  let cancelFar = () => {};
  try {
    // An idle session's read deadline, minutes away, then a near one as the signal that time has passed.
    cancelFar = after(600_000, () => {});
    await new Promise<void>((resolve) => after(300, resolve));
    assert.ok(wakeups <= 2, `${wakeups} wake-ups in 300 ms`);
  } finally {
    cancelFar();
    globalThis.setTimeout = realTimeout;
    globalThis.setInterval = realInterval;
  }
  assert.equal(pendingDeadlines(), 0);
});
