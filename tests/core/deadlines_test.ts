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
