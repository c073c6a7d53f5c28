import assert from "node:assert/strict";
import { validateConfig } from "../../src/config/load.ts";
import { MemoryLog } from "../../src/core/log.ts";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import { startFerry } from "../../src/main.ts";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";
import type { DeliveryUpdate } from "../../src/spool/spool.ts";
import type { FerryConfig } from "../../mod.ts";
import { startDownstream, submit, waitFor } from "../helpers/downstream.ts";

/**
 * A spool that notes, the moment each write resolves, which messages have a delivered recipient on disk;
 * a message's outcome write can be held back until a given event (to make it slow on purpose).
 */
class WatchedSpool extends SqliteSpool {
  readonly durable = new Set<string>();
  readonly holds = new Map<string, Promise<void>>();

  override async apply(update: DeliveryUpdate): Promise<void> {
    await this.holds.get(update.id);
    await super.apply(update);
    if (update.recipients?.some((r) => r.status === "delivered")) this.durable.add(update.id);
  }
}

Deno.test("a delivery's outcome is on disk before the next message on its pooled connection is complete", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-outcome-durable-" });
  const ids = new Map<string, string>();
  let spool: WatchedSpool | undefined;
  /** Lets the first message's outcome write go on (see the MAIL hook) */
  const slowCommit = Promise.withResolvers<void>();
  /** At each MAIL and each final dot: the messages answered 250 before it, and whether each was on disk */
  const seen: { at: string; from: string; answered: string[]; durable: boolean[] }[] = [];
  const note = (at: string, from: string) => {
    // Synchronous: exactly what Ferry had committed when this reached the downstream.
    const answered = target.messages.map((m) => m.from);
    seen.push({ at, from, answered, durable: answered.map((f) => spool!.durable.has(ids.get(f)!)) });
  };
  const target = startDownstream({
    mail: (from) => {
      note("MAIL", from);
      // The first message's outcome write is slow on purpose: held until the second message's final dot has
      // arrived (a Ferry that sends the next message regardless gets there) or, if it does not come, for a
      // moment after the second MAIL. The timer only decides how long Ferry must hold that dot back; the
      // assertions below do not depend on it.
      if (seen.length === 1) spool!.holds.set(ids.get(from)!, slowCommit.promise);
      else setTimeout(slowCommit.resolve, 300);
      return undefined;
    },
    onDataEnd: (tx) => {
      note("dot", tx.from);
      if (seen.length > 2) slowCommit.resolve();
    },
  });
  const config = (deliver: boolean): FerryConfig => ({
    hostname: "ferry.test",
    listen: [{ address: "127.0.0.1", port: 0 }],
    spool: { dir: `${dir}/spool` },
    relay: { domains: [], clients: ["127.0.0.0/8"] },
    admin: { enable: false },
    routes: [{ name: "smart", domains: "*", hosts: [`127.0.0.1:${target.port}`] }],
    // One connection to the host: the second message waits for the first's and reuses it.
    delivery: { enable: deliver, connectionsPerHost: 1, idleTimeout: "60s" },
  });
  try {
    // Both messages are queued first, so that the second is already waiting when the first's 250 comes.
    const queueing = await startFerry(validateConfig(config(false)), { log: new MemoryLog() });
    for (const from of ["first@client.test", "second@client.test"]) {
      ids.set(from, await submit(queueing.addresses[0].port, ["rcpt@example.test"], { from }));
    }
    await queueing.stop();

    spool = new WatchedSpool({ dir: `${dir}/spool` });
    const ferry = await startFerry(validateConfig(config(true)), {
      log: new MemoryLog(),
      resolver: new MemoryResolver(),
      spool,
    });
    try {
      // Bounded: a Ferry that waited for the commit before even sending the second MAIL would never release
      // the held write, and must fail here rather than hang.
      await waitFor(
        () => [...ids.values()].every((id) => spool!.durable.has(id)),
        30_000,
        "both outcomes on disk",
      );
      assert.equal(target.connections, 1, "both messages went over one pooled connection");
      assert.equal(target.messages.length, 2);
      const [first, second] = [seen[0].from, seen[2].from];
      assert.deepEqual(seen, [
        { at: "MAIL", from: first, answered: [], durable: [] },
        { at: "dot", from: first, answered: [], durable: [] },
        // The second envelope went out while the first's outcome was still being written (it overlaps) ...
        { at: "MAIL", from: second, answered: [first], durable: [false] },
        // ... but its final dot only once that outcome was committed.
        { at: "dot", from: second, answered: [first], durable: [true] },
      ]);
    } finally {
      await ferry.stop();
    }
  } finally {
    await target.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
