import assert from "node:assert/strict";
import { retryJitter } from "../../src/outbound/queue_clock.ts";
import { rig, settle, until } from "./_queue_rig.ts";

const T0 = 1_000_000_000;
const MIN = 60_000;
const deferred = { kind: "deferred" as const, status: "4.4.1", text: "connection refused" };

Deno.test("the queue manager sleeps until the earliest next attempt and re-arms when an earlier one appears", async () => {
  const r = await rig({ start: T0, delivery: { queueInterval: "1d" } });
  try {
    await r.add("later", [{ attempts: 1, nextAttempt: T0 + 30 * MIN }]);
    await r.scheduler.start();
    assert.equal(r.calls.length, 0, "nothing is due");
    assert.equal(
      r.scheduler.wakeAt,
      T0 + 30 * MIN,
      "armed at the earliest next attempt, not at queueInterval",
    );

    // A message due sooner appears (an operator's retry, a new deferral): the timer moves earlier.
    await r.add("sooner", [{ attempts: 1, nextAttempt: T0 + 5 * MIN }]);
    await r.scheduler.wake();
    assert.equal(r.scheduler.wakeAt, T0 + 5 * MIN);

    await r.clock.advanceTo(T0 + 5 * MIN - 1);
    assert.equal(r.calls.length, 0, "not before its time");
    await r.clock.advanceTo(T0 + 5 * MIN);
    await settle();
    assert.deepEqual(r.calls.map((c) => c.id), ["sooner"]);
    assert.equal(r.scheduler.wakeAt, T0 + 30 * MIN, "re-armed for the remaining one");
    await r.clock.advanceTo(T0 + 30 * MIN);
    await settle();
    assert.deepEqual(r.calls.map((c) => c.id), ["sooner", "later"]);
    assert.equal(await r.spool.count(), 0);
  } finally {
    await r.stop();
  }
});

Deno.test("new mail stored while the queue manager looks up its next wake-up is not left for the safety-net timer", async () => {
  const r = await rig({ start: T0, delivery: { queueInterval: "1d" } });
  try {
    await r.scheduler.start();
    // The lookup of the next due time answers from before the new mail was stored, and only after the mail's
    // wake-up came in (as when the read runs beside the store's commit).
    const lookup = r.spool.nextDue.bind(r.spool);
    let answer!: () => void;
    const answered = new Promise<void>((res) => (answer = res));
    let looking!: () => void;
    const lookingUp = new Promise<void>((res) => (looking = res));
    r.spool.nextDue = async () => {
      const stale = await lookup();
      looking();
      await answered;
      return stale;
    };
    const pass = r.scheduler.wake();
    await lookingUp;
    await r.add("fresh", [{}]);
    r.scheduler.enqueue("fresh");
    r.spool.nextDue = lookup;
    answer();
    await pass;
    await until(() => r.calls.length === 1, "the new mail delivered without the clock moving");
    assert.deepEqual(r.calls.map((c) => c.id), ["fresh"]);
  } finally {
    await r.stop();
  }
});

Deno.test("new mail goes before a due backlog of retries", async () => {
  let release!: () => void;
  const gate = new Promise<void>((res) => (release = res));
  const r = await rig({
    start: T0,
    delivery: { concurrency: 1 },
    script: async (call) => {
      if (call.id === "old0") await gate; // holds the only slot while the others queue up
      return {};
    },
  });
  try {
    for (let i = 0; i < 3; i++) await r.add(`old${i}`, [{ attempts: 2, nextAttempt: T0 - (3 - i) * MIN }]);
    await r.scheduler.start();
    await settle();
    assert.deepEqual(r.calls.map((c) => c.id), ["old0"]);
    await r.add("fresh", [{}]);
    r.scheduler.enqueue("fresh");
    release();
    for (let i = 0; i < 10 && r.calls.length < 4; i++) await settle();
    assert.deepEqual(r.calls.map((c) => c.id), ["old0", "fresh", "old1", "old2"]);
  } finally {
    await r.stop();
  }
});

Deno.test("retry times get jitter within the configured fraction of the interval, never earlier", async () => {
  const j = retryJitter(0.1, () => 0.999);
  assert.equal(j(1000, 0), 1000);
  assert.ok(j(10 * MIN, 10 * MIN) < 10 * MIN + MIN && j(10 * MIN, 10 * MIN) >= 10 * MIN + 0.99 * MIN);
  assert.equal(retryJitter(0.1, () => 0)(5000, 10 * MIN), 5000);
  assert.equal(retryJitter(0, () => 0.5)(5000, 10 * MIN), 5000);
  // Capped at an hour for long intervals.
  assert.ok(retryJitter(0.5, () => 0.999)(0, 24 * 60 * MIN) < 60 * MIN);

  // Through the queue manager: two deferred messages spread over [at, at + 10% of the 10-minute interval].
  const values = [0, 0.999];
  const r = await rig({ start: T0, random: () => values.shift() ?? 0.5, script: () => deferred });
  try {
    await r.add("a", [{}]);
    await r.add("b", [{}]);
    await r.scheduler.start();
    for (let i = 0; i < 10 && (await r.spool.query({ state: "deferred" })).length < 2; i++) await settle();
    const next = (await r.spool.query({ state: "deferred" })).map((q) => q.nextAttempt!).sort();
    assert.equal(next.length, 2);
    assert.equal(next[0], T0 + 10 * MIN);
    assert.ok(next[1] > T0 + 10 * MIN + 0.99 * MIN && next[1] < T0 + 11 * MIN, String(next[1] - T0));
  } finally {
    await r.stop();
  }
});

Deno.test("a dead destination's other messages are deferred without trying, until its back-off ends", async () => {
  const r = await rig({
    start: T0,
    delivery: { concurrency: 1, deadDestinationAfter: 2, hostRetryBase: "5m", hostRetryMax: "1h" },
    script: (call) => (call.id === "probe" ? {} : deferred),
  });
  try {
    for (let i = 0; i < 5; i++) await r.add(`m${i}`, [{ address: `u${i}@dead.test` }]);
    await r.add("other", [{ address: "u@alive.test" }]);
    await r.scheduler.start();
    for (let i = 0; i < 20 && (await r.spool.query({ state: "deferred" })).length < 6; i++) await settle();
    const tried = r.calls.map((c) => c.domain);
    assert.deepEqual(tried.filter((d) => d === "dead.test").length, 2, "two failures make it dead");
    assert.ok(tried.includes("alive.test"), "other destinations are still tried");
    const skipped = r.log.lines.filter((l) =>
      /destination not responding \(2 connection failures/.test(l.text)
    );
    assert.equal(skipped.length, 3, "the other three were deferred without a connection");
    // After the back-off the next message is the probe, and a success revives the destination.
    r.calls.length = 0;
    await r.clock.advanceTo(T0 + 5 * MIN);
    await r.add("probe", [{ address: "p@dead.test" }]);
    await r.scheduler.wake();
    await settle();
    assert.ok(r.calls.some((c) => c.id === "probe"), "tried once the back-off is over");
    assert.equal(await r.spool.get("probe"), undefined, "the probe was delivered");
    // Revived: its failure count starts again, so one more failure does not make it dead at once (without
    // the revival the count would stand at three and x1's failure would skip x2).
    await r.add("x1", [{ address: "x1@dead.test" }]);
    await r.scheduler.wake();
    for (let i = 0; i < 10 && !r.calls.some((c) => c.id === "x1"); i++) await settle();
    await r.add("x2", [{ address: "x2@dead.test" }]);
    await r.scheduler.wake();
    for (let i = 0; i < 10 && !r.calls.some((c) => c.id === "x2"); i++) await settle();
    assert.deepEqual(r.calls.map((c) => c.id).filter((id) => id.startsWith("x")), ["x1", "x2"]);
  } finally {
    await r.stop();
  }
});

Deno.test("new mail for a dead destination is deferred before it is stored, in the same write", async () => {
  const r = await rig({
    start: T0,
    delivery: { concurrency: 1, deadDestinationAfter: 2, hostRetryBase: "5m", hostRetryMax: "1h" },
    script: () => deferred,
  });
  const envelope = (id: string, address: string) => ({
    id,
    sender: "sender@example.org",
    recipients: [{ address, status: "pending" as const }],
    size: 10,
    receivedAt: T0,
    protocol: "esmtp",
    client: { ip: "127.0.0.1", port: 1 },
    receivedBy: "ferry.test",
  });
  try {
    assert.equal(
      await r.scheduler.deferIfDead(envelope("early", "e@dead.test")),
      undefined,
      "nothing dead yet",
    );
    for (let i = 0; i < 2; i++) await r.add(`m${i}`, [{ address: `u${i}@dead.test` }]);
    await r.scheduler.start();
    for (let i = 0; i < 20 && (await r.spool.query({ state: "deferred" })).length < 2; i++) await settle();
    assert.equal(r.calls.length, 2, "two failures make it dead");

    assert.equal(await r.scheduler.deferIfDead(envelope("alive", "a@alive.test")), undefined);
    const env = envelope("new", "n@dead.test");
    const deferral = await r.scheduler.deferIfDead(env);
    assert.ok(deferral, "all its destinations are dead");
    assert.equal(env.recipients[0].status, "pending");
    assert.equal((env.recipients[0] as { attempts?: number }).attempts, 1);
    assert.ok(((env.recipients[0] as { nextAttempt?: number }).nextAttempt ?? 0) >= T0 + 10 * MIN);
    assert.equal(r.log.lines.filter((l) => l.text.includes("n@dead.test")).length, 0, "logged once stored");
    await r.spool.store(env, new TextEncoder().encode("Subject: new\r\n\r\nbody\r\n"), {
      history: deferral.history,
    });
    deferral.stored();
    const row = await r.spool.row("new");
    assert.equal(row?.state, "deferred", "stored deferred, never claimed");
    assert.match((await r.spool.history("new"))[0].text, /^== n@dead\.test .*destination not responding/);
    assert.ok(r.log.has(/== n@dead\.test R=.* defer: destination not responding \(2 connection failures/));
    // A due message on a live domain as the positive signal that the queue was looked at again.
    await r.add("probe", [{ address: "p@probe.test" }]);
    await r.scheduler.wake();
    await until(() => r.calls.some((c) => c.id === "probe"), "the probe tried");
    assert.equal(r.calls.filter((c) => c.id !== "probe").length, 2, "no connection for it");
  } finally {
    await r.stop();
  }
});

Deno.test("per-destination concurrency holds back a busy destination; one message's groups run side by side", async () => {
  const gates: (() => void)[] = [];
  let inFlight = 0;
  let maxSlow = 0;
  const r = await rig({
    start: T0,
    delivery: { concurrency: 10, destinationConcurrency: 2 },
    script: async (call) => {
      if (call.domain !== "slow.test") return {};
      inFlight++;
      maxSlow = Math.max(maxSlow, inFlight);
      await new Promise<void>((res) => gates.push(res));
      inFlight--;
      return {};
    },
  });
  try {
    for (let i = 0; i < 5; i++) await r.add(`s${i}`, [{ address: `u${i}@slow.test` }]);
    await r.add("mixed", [{ address: "a@slow.test" }, { address: "b@fast.test" }]);
    await r.scheduler.start();
    await settle();
    assert.equal(inFlight, 2, "only two deliveries to slow.test at once");
    // The fast group of the mixed message is not stuck behind its slow group.
    assert.ok(r.calls.some((c) => c.id === "mixed" && c.domain === "fast.test"));
    const mixed = await r.spool.get("mixed");
    assert.equal(mixed?.recipients.find((x) => x.address === "b@fast.test")?.status, "delivered");
    assert.equal(mixed?.recipients.find((x) => x.address === "a@slow.test")?.status, "pending");
    while (r.calls.filter((c) => c.domain === "slow.test").length < 6 || gates.length > 0) {
      gates.shift()?.();
      await settle();
    }
    for (let i = 0; i < 10 && (await r.spool.count()) > 0; i++) await settle();
    assert.equal(maxSlow, 2);
    assert.equal(await r.spool.count(), 0);
  } finally {
    await r.stop();
  }
});

Deno.test("a state update that fails is retried and never leads to sending a 250'd recipient again", async () => {
  let failures = 2;
  const r = await rig({
    start: T0,
    spool: {
      beforeWrite: (kind) => {
        if (kind === "apply" && failures > 0) {
          failures--;
          throw new Error("disk I/O error");
        }
      },
    },
  });
  try {
    await r.add("m", [{ address: "a@dest.test" }, { address: "b@dest.test" }]);
    await r.scheduler.start();
    await settle();
    assert.equal(r.calls.length, 1);
    assert.ok(r.log.has(/spool write for m failed: disk I\/O error; retrying in 1s/));
    await r.clock.advanceTo(T0 + 1000);
    await r.clock.advanceTo(T0 + 3000);
    await settle();
    for (let i = 0; i < 10 && (await r.spool.count()) > 0; i++) await settle();
    assert.equal(await r.spool.count(), 0, "saved and completed");
    assert.equal(r.calls.length, 1, "delivered once");
  } finally {
    await r.stop();
  }
});

Deno.test("a message whose attempt is over leaves its slot while its outcome is written", async () => {
  let holdWrites = true;
  const r = await rig({
    start: T0,
    delivery: { concurrency: 1 },
    spool: {
      beforeWrite: (kind, id) => {
        if (kind === "apply" && id === "first" && holdWrites) throw new Error("disk I/O error");
      },
    },
  });
  try {
    await r.add("first", [{ address: "a@one.test" }]);
    await r.scheduler.start();
    for (let i = 0; i < 10 && !r.log.has(/spool write for first failed/); i++) await settle();
    assert.ok(r.log.has(/spool write for first failed: disk I\/O error; retrying in 1s/));
    // The only slot is free again although first's outcome is not written yet: the next message goes out.
    await r.add("second", [{ address: "b@two.test" }]);
    r.scheduler.enqueue("second");
    for (let i = 0; i < 10 && r.calls.length < 2; i++) await settle();
    assert.deepEqual(r.calls.map((c) => c.id), ["first", "second"]);
    assert.ok(r.scheduler.isActive("first"), "still in the window until its outcome is written");
    assert.equal((await r.spool.row("first"))?.state, "active", "never claimed twice meanwhile");
    holdWrites = false;
    await r.clock.advanceTo(T0 + 1000);
    for (let i = 0; i < 10 && (await r.spool.count()) > 0; i++) await settle();
    assert.equal(await r.spool.count(), 0, "both written and complete");
    assert.equal(r.calls.length, 2, "first was delivered once");
  } finally {
    await r.stop();
  }
});

Deno.test("a failure report is stored in the same transaction as the failed state", async () => {
  let refuse = true;
  const r = await rig({
    start: T0,
    script: () => ({ kind: "failed", status: "5.1.1", text: "550 5.1.1 no such user" }),
    spool: {
      beforeWrite: (kind) => {
        if (kind === "apply" && refuse) throw new Error("disk full");
      },
    },
  });
  try {
    await r.add("m", [{ address: "gone@dest.test" }]);
    await r.scheduler.start();
    await settle();
    assert.ok(r.log.has(/spool write for m failed: disk full/));
    // Neither the failed state nor the report is visible: the bounce cannot be lost between the two.
    assert.equal((await r.spool.get("m"))?.recipients[0].status, "pending");
    assert.equal(await r.spool.count(), 1);
    refuse = false;
    await r.clock.advanceTo(T0 + 1000);
    for (let i = 0; i < 10 && (await r.spool.get("m")) !== undefined; i++) await settle();
    assert.equal(await r.spool.get("m"), undefined, "the failed message is complete");
    assert.ok(r.log.has(/<= <> R=m U=ferry P=local S=\d+ for sender@example.org \(failure report\)/));
    // The report was queued with it and went out to the sender (the rig's deliver fails it, and a report
    // about a report is never sent, so it completes).
    for (let i = 0; i < 10 && !r.calls.some((c) => c.recipients[0] === "sender@example.org"); i++) {
      await settle();
    }
    assert.ok(r.calls.some((c) => c.recipients[0] === "sender@example.org"));
  } finally {
    await r.stop();
  }
});

Deno.test("stop() aborts deliveries in flight through their signal and saves what completed", async () => {
  const r = await rig({
    start: T0,
    script: async (call) => {
      if (call.domain === "quick.test") return {};
      await new Promise<void>((res) => call.signal!.addEventListener("abort", () => res(), { once: true }));
      return deferred;
    },
  });
  await r.add("m", [{ address: "a@quick.test" }, { address: "b@hang.test" }]);
  await r.scheduler.start();
  await settle();
  assert.equal(r.calls.length, 2);
  assert.equal(r.scheduler.activeCount, 1);
  await r.scheduler.stop(5000);
  assert.equal(r.calls.find((c) => c.domain === "hang.test")?.signal?.aborted, true);
  const env = await r.spool.get("m");
  assert.equal(env?.recipients[0].status, "delivered", "the completed recipient is saved");
  assert.equal(env?.recipients[1].status, "pending");
  assert.equal(env?.recipients[1].attempts, undefined, "the interrupted one is left as it was");
  assert.equal((await r.spool.row("m"))?.state, "deferred");
  await r.spool.close();
});

Deno.test("new mail announced just as a queue run ends (after its look-up of the next due time, before the run is over) is claimed at once, not left to the timer", async () => {
  // The race as it happens with the real spool: a run's next-due look-up is answered before a new message is
  // stored, and that message's "stored" call (enqueue) comes a few microtasks later, while the run is ending.
  // Each hop count is one placement of that call; every placement must get the message out at once.
  for (let hops = 0; hops < 6; hops++) {
    const r = await rig({ start: T0, delivery: { queueInterval: "1h" } });
    try {
      await r.scheduler.start();
      await settle();
      const nextDue = r.spool.nextDue.bind(r.spool);
      let lookedUp = false;
      r.spool.nextDue = async () => {
        const due = await nextDue();
        await r.add("m", [{ address: "m@dest.test" }]);
        lookedUp = true;
        return due;
      };
      const timer = r.clock.timer.bind(r.clock);
      r.clock.timer = (ms, fn) => {
        if (lookedUp) {
          lookedUp = false;
          let left = hops;
          const hop = () => left-- > 0 ? queueMicrotask(hop) : r.scheduler.enqueue("m");
          queueMicrotask(hop);
        }
        return timer(ms, fn);
      };
      await r.scheduler.wake();
      r.spool.nextDue = nextDue;
      r.clock.timer = timer;
      await until(
        () => r.calls.length > 0,
        `the message enqueued ${hops} microtask(s) after the look-up claimed`,
      );
      assert.equal(r.clock.now(), T0, "no timer had to fire");
    } finally {
      await r.stop();
    }
  }
});
