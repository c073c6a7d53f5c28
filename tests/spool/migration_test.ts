import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";
import { testEnvelope } from "./_helpers.ts";
import { writeV1Spool } from "./_v1_spool.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

Deno.test("a schema-1 spool.db is converted at open: states, recipients and data kept, bad rows quarantined", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-migrate-" });
  const dir = `${tmp}/spool`;
  try {
    const fresh = testEnvelope("AAAAAA-fresh000000-0001", { receivedAt: 1_000 });
    const retried = testEnvelope("AAAAAA-retry000000-0002", {
      receivedAt: 2_000,
      recipients: [
        { address: "done@one.example", status: "delivered", attempts: 1 },
        {
          address: "later@two.example",
          status: "pending",
          attempts: 2,
          lastError: "451 try later",
          nextAttempt: 7_000,
          notify: ["FAILURE", "DELAY"],
          extra: { firstFailure: 1_500, lastInterval: 900_000 },
        },
      ],
      delivery: { delayWarnings: 1 },
    });
    writeV1Spool(dir, [
      { envelope: fresh, data: bytes("fresh body\r\n") },
      { envelope: retried, data: bytes("retried body\r\n") },
      { envelope: testEnvelope("AAAAAA-broken00000-0003"), data: bytes("x"), envelopeJson: "{not json" },
      {
        envelope: testEnvelope("AAAAAA-wrongid0000-0004"),
        data: bytes("y"),
        envelopeJson: JSON.stringify(testEnvelope("somebody-else")),
      },
    ]);

    const logged: string[] = [];
    const spool = new SqliteSpool({ dir, log: (l) => logged.push(l) });
    const report = await spool.open();
    try {
      assert.deepEqual(report.migrated, { from: 1, to: 3, messages: 2 });
      assert.equal(report.queued, 2);
      assert.deepEqual(report.quarantined.map((q) => q.id).sort(), [
        "AAAAAA-broken00000-0003",
        "AAAAAA-wrongid0000-0004",
      ]);
      assert.match(report.quarantined.find((q) => q.id.includes("broken"))!.reason, /not JSON/);
      assert.equal(
        await Deno.readTextFile(`${dir}/quarantine/AAAAAA-broken00000-0003.envelope`),
        "{not json",
      );
      assert.match(logged.join("\n"), /converted spool.db from schema 1 to 3 \(2 message\(s\)\)/);

      assert.deepEqual(await spool.get(retried.id), retried, "the envelope reads back as it was");
      assert.deepEqual(await spool.get(fresh.id), fresh);
      assert.deepEqual(await spool.readData(retried.id), bytes("retried body\r\n"));
      assert.equal((await spool.row(fresh.id))?.state, "incoming");
      const row = await spool.row(retried.id);
      assert.equal(row?.state, "deferred");
      assert.equal(row?.nextAttempt, 7_000);
      assert.deepEqual((await spool.claim(5_000, 10)).map((c) => c.id), [fresh.id]);
      assert.equal(await spool.nextDue(), 7_000);
    } finally {
      await spool.close();
    }
    const db = new DatabaseSync(`${dir}/spool.db`, { readOnly: true });
    try {
      assert.equal((db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version, 3);
      const old = db.prepare("SELECT name FROM sqlite_master WHERE name = 'envelopes'").get();
      assert.equal(old, undefined, "the old table is gone");
      const orphans = db.prepare("SELECT count(*) AS n FROM data WHERE id NOT IN (SELECT id FROM messages)")
        .get() as { n: number };
      assert.equal(orphans.n, 0, "quarantined rows' data left the database");
    } finally {
      db.close();
    }
    // A second open has nothing to convert.
    const again = new SqliteSpool({ dir });
    assert.deepEqual(await again.open(), { queued: 2, quarantined: [] });
    await again.close();
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("a spool.db from a newer Ferry is refused, untouched", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-migrate-" });
  try {
    const db = new DatabaseSync(`${tmp}/spool.db`);
    db.exec("PRAGMA user_version = 9");
    db.close();
    const spool = new SqliteSpool({ dir: tmp, thread: "main" });
    await assert.rejects(() => spool.open(), /schema version 9, newer than this Ferry's 3/);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
