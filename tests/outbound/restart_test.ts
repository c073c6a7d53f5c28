import assert from "node:assert/strict";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import type { FerryConfig } from "../../mod.ts";
import { freePort } from "../helpers/sink.ts";
import {
  type DirFerry,
  linesOf,
  startDownstream,
  startFerryIn,
  submit,
  waitFor,
} from "../helpers/downstream.ts";

// One message for two domains: fast.test delivers at once, slow.test goes to a dead port first. Ferry is
// stopped and started again on the same spool directory.

function config(fastPort: number, slowHost: string, extra: FerryConfig = {}): FerryConfig {
  return {
    routes: [
      { name: "fast", domains: "fast.test", hosts: [`127.0.0.1:${fastPort}`] },
      { name: "slow", domains: "slow.test", hosts: [slowHost] },
    ],
    retry: [{ domains: "*", rules: [{ every: "1500ms", until: "1h" }] }],
    ...extra,
    delivery: { enable: true, queueInterval: "100ms", hostRetryBase: "50ms", ...extra.delivery },
  };
}

Deno.test("after a restart a delivered recipient is not sent again and a deferred one keeps its retry state", async () => {
  const fast = startDownstream();
  const later = startDownstream();
  const dead = await freePort();
  let first: DirFerry | undefined;
  let second: DirFerry | undefined;
  try {
    first = await startFerryIn(config(fast.port, `127.0.0.1:${dead}`), { resolver: new MemoryResolver() });
    const submitted = Date.now();
    const id = await submit(first.port, ["a@fast.test", "b@slow.test"], {
      rcptParams: { "b@slow.test": " NOTIFY=NEVER" },
    });
    // The two destinations run side by side: wait for both outcomes.
    await waitFor(() => linesOf(first!.memlog, "==").length > 0, 8000, "the deferral");
    await waitFor(() => linesOf(first!.memlog, "=>").length > 0, 8000, "the delivery");
    await waitFor(
      async () => (await first!.spool.get(id))?.recipients.every((r) => (r.attempts ?? 0) > 0) ?? false,
      8000,
      "both outcomes saved",
    );
    assert.equal(linesOf(first.memlog, "=>").length, 1);
    assert.equal(fast.messages.length, 1);
    const before = await first.spool.get(id);
    const b0 = before!.recipients.find((r) => r.address === "b@slow.test")!;
    assert.equal(b0.status, "pending");
    assert.equal(b0.attempts, 1);
    await first.stop();

    // Start again on the same spool; b@slow.test now has a working host.
    second = await startFerryIn(config(fast.port, `127.0.0.1:${later.port}`), {
      dir: first.dir,
      resolver: new MemoryResolver(),
    });
    const after = await second.spool.get(id);
    assert.ok(after, "the message is still queued");
    const a1 = after.recipients.find((r) => r.address === "a@fast.test")!;
    const b1 = after.recipients.find((r) => r.address === "b@slow.test")!;
    assert.equal(a1.status, "delivered");
    assert.equal(b1.status, "pending");
    assert.equal(b1.attempts, 1);
    assert.equal(b1.nextAttempt, b0.nextAttempt);
    // The retry rule's 1500 ms counted from the failed attempt (not a time taken since the restart, which
    // a loaded machine can make longer than that).
    assert.ok(
      b1.nextAttempt! >= submitted + 1500,
      `nextAttempt ${b1.nextAttempt! - submitted} ms after submit`,
    );
    assert.deepEqual(b1.extra, b0.extra);
    assert.match(b1.lastError ?? "", /./);

    // Not before its time, and then to the new host only.
    await waitFor(() => second!.memlog.has("Completed"), 15_000, "completion after restart");
    assert.equal(later.messages.length, 1);
    assert.ok(
      later.messages[0].at >= b1.nextAttempt!,
      `retried ${b1.nextAttempt! - later.messages[0].at} ms before its nextAttempt`,
    );
    assert.deepEqual(later.messages[0].rcpts, ["b@slow.test"]);
    assert.equal(fast.messages.length, 1, "a@fast.test must not be delivered twice");
    const b2 = linesOf(second.memlog, "=>");
    assert.equal(b2.length, 1);
    assert.match(b2[0], /^=> b@slow\.test R=slow /);
    assert.equal(await second.spool.get(id), undefined);
  } finally {
    await first?.stop();
    await second?.stop();
    if (first) await Deno.remove(first.dir, { recursive: true }).catch(() => {});
    await fast.stop();
    await later.stop();
  }
});

Deno.test("stopping while a slow host holds a delivery keeps what was delivered and redelivers only the rest", async () => {
  const fast = startDownstream();
  const slow = startDownstream({ dataDelayMs: 1500 });
  let first: DirFerry | undefined;
  let second: DirFerry | undefined;
  try {
    first = await startFerryIn(
      config(fast.port, `127.0.0.1:${slow.port}`, { limits: { shutdownGrace: "100ms" } }),
      { resolver: new MemoryResolver() },
    );
    const id = await submit(first.port, ["a@fast.test", "b@slow.test"]);
    await waitFor(
      () => fast.messages.length === 1 && slow.connections === 1,
      15_000,
      "fast delivered, slow busy",
    );
    await waitFor(() => slow.dataEnds === 1, 15_000, "the slow host to hold the final dot");
    await first.stop();
    const stoppedAt = Date.now();

    second = await startFerryIn(config(fast.port, `127.0.0.1:${slow.port}`), {
      dir: first.dir,
      resolver: new MemoryResolver(),
    });
    const env = await second.spool.get(id);
    assert.ok(env, "the message is still queued");
    const state = Object.fromEntries(env.recipients.map((r) => [r.address, r.status]));
    assert.deepEqual(state, { "a@fast.test": "delivered", "b@slow.test": "pending" });
    // The slow recipient is delivered again by the new instance (at-least-once), the fast one is not.
    await waitFor(() => second!.memlog.has("Completed"), 8000, "completion after restart");
    assert.ok(Date.now() - stoppedAt < 8000);
    assert.equal(fast.messages.length, 1);
    assert.ok(slow.messages.length >= 1);
    assert.ok(slow.messages.every((m) => m.rcpts.join() === "b@slow.test"));
    // Let the first instance's abandoned delivery finish before the test ends.
    await waitFor(() => slow.messages.length === 2, 15_000, "the abandoned transaction to end");
  } finally {
    await first?.stop();
    await second?.stop();
    if (first) await Deno.remove(first.dir, { recursive: true }).catch(() => {});
    await fast.stop();
    await slow.stop();
  }
});
