import assert from "node:assert/strict";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";
import { testEnvelope } from "./_helpers.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

/** A spool holding one claimed message, "delivered", reopened with `options`. */
async function withClaimed(
  options: { maxBatch?: number; batchWindowMs?: number },
  fn: (spool: SqliteSpool) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-outcome-priority-" });
  try {
    const setup = new SqliteSpool({ dir: `${dir}/spool` });
    await setup.open();
    await setup.store(testEnvelope("delivered"), bytes("body"));
    await setup.claim(Date.now(), 1);
    await setup.close();
    const spool = new SqliteSpool({ dir: `${dir}/spool`, ...options });
    await spool.open();
    try {
      await fn(spool);
    } finally {
      await spool.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const outcome = {
  id: "delivered",
  recipients: [{ index: 0, status: "delivered" as const, attempts: 1 }],
  history: ["=> rcpt@example.com"],
  state: "done" as const,
};

Deno.test("a delivery outcome goes into the next commit ahead of a backlog of inbound stores", () =>
  withClaimed({ maxBatch: 2 }, async (spool) => {
    const order: string[] = [];
    const note = (name: string, p: Promise<unknown>) => p.then(() => order.push(name));
    // Four stores queue up first (two batches' worth), then the outcome of a delivery that got its 250.
    const writes = ["s1", "s2", "s3", "s4"].map((id) => note(id, spool.store(testEnvelope(id), bytes(id))));
    writes.push(note("outcome", spool.apply(outcome)));
    await Promise.all(writes);
    // The outcome shares the first commit with the oldest store; the later stores follow in their order.
    assert.deepEqual(order, ["outcome", "s1", "s2", "s3", "s4"]);
    assert.equal(spool.stats.commits, 3, "three batches of at most two");
    assert.equal(await spool.get("delivered"), undefined, "the delivered message is gone");
    assert.equal(await spool.count(), 4);
  }));

Deno.test("a delivery outcome does not wait for the batch window, and takes the waiting writes along", () =>
  withClaimed({ batchWindowMs: 600_000 }, async (spool) => {
    const started = Date.now();
    const stored = spool.store(testEnvelope("s1"), bytes("s1"));
    await spool.apply(outcome);
    await stored;
    // Waiting for the window would take ten minutes; the commit the outcome started took both writes.
    assert.ok(Date.now() - started < 60_000);
    assert.deepEqual(spool.stats, { commits: 1, writes: 2 });
  }));
