import assert from "node:assert/strict";
import { QueueOps } from "../../src/outbound/queue_ops.ts";
import { rig, settle, until } from "./_queue_rig.ts";

const T0 = 1_000_000_000;
const MIN = 60_000;
const deferred = { kind: "deferred" as const, status: "4.4.1", text: "connection refused" };

/** The queue operations over a rig's spool and queue manager, on its clock. */
function opsOn(r: Awaited<ReturnType<typeof rig>>): QueueOps {
  return new QueueOps({
    spool: r.spool,
    hostname: "ferry.test",
    log: r.log,
    manager: r.scheduler,
    now: r.clock.now,
  });
}

Deno.test("hold, release, retry and flush move messages between queue states and wake the manager", async () => {
  const r = await rig({ start: T0, delivery: { queueInterval: "1d" }, script: () => deferred });
  const ops = opsOn(r);
  try {
    await r.add("a", [{ address: "x@one.test" }]);
    await r.add("b", [{ address: "y@two.test" }]);
    await r.scheduler.start();
    await until(async () => (await ops.list({ state: "deferred" })).length === 2, "first deferrals");
    assert.equal(r.calls.length, 2);

    assert.deepEqual(await ops.hold(["a", "nope"]), [
      { id: "a", ok: true, message: "held" },
      { id: "nope", ok: false, message: "not in the queue" },
    ]);
    assert.deepEqual((await ops.list({ state: "hold" })).map((q) => q.id), ["a"]);
    assert.equal((await ops.list({ state: "hold" }))[0].reason, "held by operator");
    // A held message is not retried, even when due and flushed.
    await ops.flush();
    await settle();
    assert.deepEqual(r.calls.map((c) => c.id), ["a", "b", "b"], "flush retried b at once, not the held a");

    assert.deepEqual(await ops.retry(["a"]), [{
      id: "a",
      ok: false,
      message: "is hold, not incoming or deferred",
    }]);
    assert.deepEqual(await ops.release(["a"]), [{ id: "a", ok: true, message: "released" }]);
    assert.equal(
      (await r.spool.row("a"))?.state,
      "deferred",
      "released to its queue, due at its next attempt",
    );
    await ops.retry(["a"]);
    await until(() => r.calls.length === 4, "retry now");
    assert.equal(r.calls[3].id, "a");

    // flush of one domain: only that destination's messages become due now.
    await until(async () => (await r.spool.row("a"))?.state === "deferred", "a deferred again");
    // A held message of that destination is neither counted nor made due.
    await r.add("c", [{ address: "z@two.test", attempts: 1, nextAttempt: T0 + 24 * 60 * MIN }]);
    assert.equal((await ops.hold(["c"]))[0].ok, true);
    const before = r.calls.length;
    assert.deepEqual(await ops.flush("two.test"), { messages: 1 });
    assert.equal((await r.spool.get("c"))?.recipients[0].nextAttempt, T0 + 24 * 60 * MIN);
    await until(() => r.calls.length === before + 1, "flush of two.test");
    assert.equal(r.calls.at(-1)!.domain, "two.test");

    await until(async () => (await ops.summary()).byState.deferred === 2, "both deferred again");
    const summary = await ops.summary();
    assert.deepEqual(summary.byState, { incoming: 0, active: 0, deferred: 2, hold: 1, corrupt: 0 });
    assert.deepEqual(summary.byDomain.map((d) => d.domain).sort(), ["one.test", "two.test"]);
  } finally {
    await r.stop();
  }
});

Deno.test("flush makes every pending recipient due, also one not due while another of its message was", async () => {
  const r = await rig({ start: T0, delivery: { queueInterval: "1d" }, script: () => deferred });
  const ops = opsOn(r);
  try {
    await r.add("m", [
      { address: "x@one.test", attempts: 1, nextAttempt: T0 - MIN },
      { address: "y@two.test", attempts: 1, nextAttempt: T0 + 60 * MIN },
    ]);
    await r.add("later", [{ address: "z@three.test", attempts: 1, nextAttempt: T0 + 30 * MIN }]);
    await r.scheduler.start();
    await until(
      async () => (await r.spool.row("m"))?.state === "deferred" && r.calls.length === 1,
      "first run",
    );
    assert.deepEqual(r.calls.map((c) => c.domain), ["one.test"], "only the due recipient was tried");
    assert.deepEqual(await ops.flush(), { messages: 2 });
    await until(() => r.calls.length === 4, "flush");
    assert.deepEqual(r.calls.slice(1).map((c) => c.domain).sort(), ["one.test", "three.test", "two.test"]);
    await until(async () => (await ops.summary()).byState.deferred === 2, "deferred again");
    // Deferred again under the retry rules: not due again at once.
    const again = r.calls.length;
    // A due message as the positive signal that the queue was looked at again.
    await r.add("probe", [{ address: "p@probe.test", attempts: 1, nextAttempt: T0 - MIN }]);
    await r.scheduler.wake();
    await until(() => r.calls.some((c) => c.id === "probe"), "the probe tried");
    assert.equal(r.calls.filter((c) => c.id !== "probe").length, again);
  } finally {
    await r.stop();
  }
});

Deno.test("show gives envelope, recipient states, history and headers", async () => {
  const r = await rig({ start: T0, script: () => deferred });
  const ops = opsOn(r);
  try {
    await r.add("m", [{ address: "x@one.test" }]);
    await r.scheduler.start();
    await until(async () => (await r.spool.row("m"))?.state === "deferred", "deferral");
    const d = await ops.show("m");
    assert.ok(d);
    assert.equal(d.row.state, "deferred");
    assert.equal(d.envelope.recipients[0].attempts, 1);
    assert.equal(d.envelope.recipients[0].lastError, "connection refused");
    assert.match(d.history[0].text, /^== x@one.test .*connection refused/);
    assert.equal(d.headers, "Subject: m\r\n");
    assert.equal(await ops.show("nope"), undefined);
  } finally {
    await r.stop();
  }
});

Deno.test("bounce fails the pending recipients with a failure report (and the operator's reason); delete removes without one", async () => {
  const r = await rig({ start: T0, delivery: { queueInterval: "1d" }, script: () => deferred });
  const ops = opsOn(r);
  try {
    await r.add("bounced", [{ address: "x@one.test" }, { address: "y@one.test", notify: ["NEVER"] }]);
    await r.add("deleted", [{ address: "z@one.test" }]);
    await r.scheduler.start();
    await until(async () => (await ops.list({ state: "deferred" })).length === 2, "deferrals");
    await r.scheduler.stop(1000); // keep the report in the queue for inspection
    const completed: string[] = [];
    r.events.on("msg:complete", (e) => void completed.push(`${e.id} ${e.sender}`));
    const [b] = await ops.bounce(["bounced"]);
    assert.equal(b.ok, true, b.message);
    assert.match(b.message, /bounced 2 recipient\(s\), failure report \S+ to <sender@example.org>/);
    assert.equal(await r.spool.get("bounced"), undefined, "nothing pending: complete");
    const [report] = await r.spool.query({ sender: "" });
    assert.ok(report, "a failure report is queued");
    const text = new TextDecoder().decode(await r.spool.readData(report.id));
    assert.match(text, /Final-Recipient: rfc822; x@one.test/);
    assert.doesNotMatch(text, /y@one.test/, "NOTIFY=NEVER is respected");
    assert.match(text, /Diagnostic-Code: x-ferry; bounced by the administrator/);

    assert.deepEqual(await ops.delete(["deleted"]), [{ id: "deleted", ok: true, message: "deleted" }]);
    assert.equal(await r.spool.get("deleted"), undefined);
    assert.equal((await r.spool.query({ sender: "" })).length, 1, "no report for a delete");
    // As Exim after -Mg and -Mrm: the operator's line, then Completed; msg:complete fires for each.
    const lines = r.log.lines.filter((l) => l.fields.id === "bounced" || l.fields.id === "deleted")
      .map((l) => `${l.fields.id} ${l.text.replace(/, failure report .*/, "")}`);
    assert.deepEqual(lines.slice(-6), [
      "bounced ** x@one.test: bounced by the administrator",
      "bounced ** y@one.test: bounced by the administrator",
      "bounced bounced by operator",
      "bounced Completed",
      "deleted deleted by operator",
      "deleted Completed",
    ]);
    await until(() => completed.length === 2, "msg:complete for both");
    assert.deepEqual(completed, ["bounced sender@example.org", "deleted sender@example.org"]);

    // The operator's reason follows, on the same line: a line break in it cannot start a header field.
    await r.add("reasoned", [{ address: "w@one.test" }]);
    const [c] = await ops.bounce(["reasoned"], { reason: "spam\r\nX-Bad: 1" });
    assert.equal(c.ok, true, c.message);
    const reasoned = new TextDecoder().decode(await r.spool.readData(c.report!));
    assert.match(reasoned, /\r\nDiagnostic-Code: x-ferry; bounced by the administrator: spam X-Bad: 1\r\n/);
    assert.doesNotMatch(reasoned, /\r\nX-Bad/);
  } finally {
    await r.spool.close();
  }
});

Deno.test("operations on a message being delivered: hold waits for the attempt, delete and bounce abort it", async () => {
  let release!: () => void;
  const r = await rig({
    start: T0,
    delivery: { queueInterval: "1d" },
    script: async (call) => {
      if (call.id === "slow") {
        await new Promise<void>((res) => {
          release = res;
          call.signal!.addEventListener("abort", () => res(), { once: true });
        });
      }
      return deferred;
    },
  });
  const ops = opsOn(r);
  try {
    await r.add("slow", [{ address: "x@one.test" }]);
    await r.scheduler.start();
    await until(() => r.scheduler.isActive("slow"), "slow is active");
    assert.deepEqual(await ops.hold(["slow"]), [{
      id: "slow",
      ok: true,
      message: "held (after the attempt in progress)",
    }]);
    release();
    await until(() => !r.scheduler.isActive("slow"), "the attempt ended");
    const held = await ops.show("slow");
    assert.equal(held?.row.state, "hold", "the end of the attempt did not undo the hold");
    assert.equal(held?.envelope.recipients[0].attempts, 1, "its outcome was saved");

    // Delete while active: the attempt is aborted, nothing is sent again, no report.
    await ops.release(["slow"]);
    await ops.retry(["slow"]);
    await until(() => r.scheduler.isActive("slow"), "slow active again");
    const signal = r.calls.at(-1)!.signal!;
    assert.deepEqual(await ops.delete(["slow"]), [{ id: "slow", ok: true, message: "deleted" }]);
    assert.equal(signal.aborted, true, "the delivery in progress was aborted");
    assert.equal(await r.spool.count(), 0);
    await r.clock.advanceTo(T0 + 60 * MIN);
    await settle();
    assert.equal(r.calls.filter((c) => c.id === "slow").length, 2, "never tried again");
  } finally {
    await r.stop();
  }
});
