import assert from "node:assert/strict";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";
import { SpoolWriteError } from "../../src/spool/spool.ts";
import { testEnvelope, withSpoolDir } from "./_helpers.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
const listed = async (spool: SqliteSpool) => (await spool.list()).map((e) => e.envelope.id);
const ids = listed;

for (const thread of ["worker", "main"] as const) {
  Deno.test(`SqliteSpool (${thread}) keeps stored messages across close and reopen`, () =>
    withSpoolDir("ferry-spool-test-", async (dir) => {
      const spool = new SqliteSpool({ dir, thread });
      assert.deepEqual(await spool.open(), { queued: 0, quarantined: [] });
      const id = spool.newId();
      const data = bytes("Subject: hi\r\n\r\nbody\r\n");
      await spool.store(testEnvelope(id, { size: data.length }), data);
      assert.equal(await spool.count(), 1);
      assert.deepEqual((await spool.get(id))?.recipients, [{
        address: "rcpt@example.com",
        status: "pending",
      }]);
      await spool.close();

      const again = new SqliteSpool({ dir, thread });
      const report = await again.open();
      try {
        assert.deepEqual(report, { queued: 1, quarantined: [] });
        assert.deepEqual(await again.readData(id), data);
        assert.deepEqual((await again.list()).map((e) => e.envelope.id), [id]);
        assert.equal(await again.get("nope"), undefined);
        await assert.rejects(() => again.readData("nope"), Deno.errors.NotFound);
      } finally {
        await again.close();
      }
      assert.ok((await Deno.stat(`${dir}/spool.db`)).isFile);
    }));
}

Deno.test("SqliteSpool commits concurrent stores in a few shared transactions", () =>
  withSpoolDir("ferry-spool-test-", async (dir) => {
    const spool = new SqliteSpool({ dir });
    await spool.open();
    try {
      const ids = Array.from({ length: 50 }, () => spool.newId());
      await Promise.all(ids.map((id, i) => spool.store(testEnvelope(id), bytes(`message ${i}`))));
      const { commits, writes } = spool.stats;
      assert.equal(writes, 50);
      assert.ok(commits <= 2, `expected group commit, got ${commits} commits`);
      assert.equal(await spool.count(), 50);
      assert.deepEqual(await spool.readData(ids[17]), bytes("message 17"));
    } finally {
      await spool.close();
    }
  }));

Deno.test("SqliteSpool batches no more than maxBatch writes into one commit", () =>
  withSpoolDir("ferry-spool-test-", async (dir) => {
    const spool = new SqliteSpool({ dir, maxBatch: 8 });
    await spool.open();
    try {
      await Promise.all(
        Array.from({ length: 40 }, () => spool.store(testEnvelope(spool.newId()), bytes("x"))),
      );
      assert.ok(spool.stats.commits >= 5, `commits ${spool.stats.commits}`);
    } finally {
      await spool.close();
    }
  }));

Deno.test("SqliteSpool update() durably replaces the envelope and rejects an unknown id", () =>
  withSpoolDir("ferry-spool-test-", async (dir) => {
    const spool = new SqliteSpool({ dir });
    await spool.open();
    const id = spool.newId();
    await spool.store(testEnvelope(id), bytes("data"));
    const changed = testEnvelope(id, {
      recipients: [{ address: "rcpt@example.com", status: "delivered", attempts: 1 }],
      delivery: { dsnSent: true },
    });
    await spool.update(changed);
    await assert.rejects(() => spool.update(testEnvelope("no-such-id")), SpoolWriteError);
    await spool.close();

    const again = new SqliteSpool({ dir });
    await again.open();
    try {
      assert.deepEqual(await again.get(id), changed);
      assert.deepEqual(await again.readData(id), bytes("data"));
      assert.equal(await again.count(), 1);
    } finally {
      await again.close();
    }
  }));

Deno.test("SqliteSpool remove() deletes for good and ignores unknown ids", () =>
  withSpoolDir("ferry-spool-test-", async (dir) => {
    const spool = new SqliteSpool({ dir });
    await spool.open();
    const keep = spool.newId();
    const gone = spool.newId();
    await Promise.all([
      spool.store(testEnvelope(keep), bytes("k")),
      spool.store(testEnvelope(gone), bytes("g")),
    ]);
    await Promise.all([spool.remove(gone), spool.remove("never-existed")]);
    await spool.close();
    const again = new SqliteSpool({ dir });
    assert.equal((await again.open()).queued, 1);
    assert.deepEqual(await ids(again), [keep]);
    try {
      assert.equal(await again.get(gone), undefined);
      await assert.rejects(() => again.readData(gone), Deno.errors.NotFound);
    } finally {
      await again.close();
    }
  }));

Deno.test("SqliteSpool refuses a duplicate id without failing the rest of its batch", () =>
  withSpoolDir("ferry-spool-test-", async (dir) => {
    const spool = new SqliteSpool({ dir });
    await spool.open();
    try {
      const id = spool.newId();
      const other = spool.newId();
      const results = await Promise.allSettled([
        spool.store(testEnvelope(id), bytes("first")),
        spool.store(testEnvelope(id), bytes("second")),
        spool.store(testEnvelope(other), bytes("other")),
      ]);
      assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled"]);
      assert.ok((results[1] as PromiseRejectedResult).reason instanceof SpoolWriteError);
      assert.deepEqual(await spool.readData(id), bytes("first"));
      assert.equal(await spool.count(), 2);
    } finally {
      await spool.close();
    }
  }));

Deno.test("SqliteSpool rejects envelopes without an id and writes after close", () =>
  withSpoolDir("ferry-spool-test-", async (dir) => {
    const spool = new SqliteSpool({ dir });
    await assert.rejects(() => spool.store(testEnvelope("x"), bytes("x")), SpoolWriteError); // not open yet
    await spool.open();
    await assert.rejects(() => spool.store(testEnvelope(""), bytes("x")), TypeError);
    await assert.rejects(
      () => spool.store(testEnvelope("y"), "text" as unknown as Uint8Array),
      TypeError,
    );
    await spool.close();
    await assert.rejects(() => spool.store(testEnvelope("z"), bytes("z")), SpoolWriteError);
    await assert.rejects(() => spool.count(), /not open/);
  }));

Deno.test("SqliteSpool close() commits writes still waiting for their batch", () =>
  withSpoolDir("ferry-spool-test-", async (dir) => {
    const spool = new SqliteSpool({ dir, batchWindowMs: 50 });
    await spool.open();
    const ids = Array.from({ length: 5 }, () => spool.newId());
    const pending = ids.map((id) => spool.store(testEnvelope(id), bytes(id)));
    await spool.close();
    await Promise.all(pending);
    const again = new SqliteSpool({ dir });
    await again.open();
    assert.deepEqual((await listed(again)).sort(), [...ids].sort());
    await again.close();
  }));

Deno.test("SqliteSpool moves an unreadable spool.db to quarantine and starts empty", () =>
  withSpoolDir("ferry-spool-test-", async (dir) => {
    await Deno.mkdir(dir, { recursive: true });
    const garbage = bytes("this is not an SQLite database\n".repeat(300));
    await Deno.writeFile(`${dir}/spool.db`, garbage);
    const logged: string[] = [];
    const spool = new SqliteSpool({ dir, log: (line) => logged.push(line) });
    const report = await spool.open();
    try {
      assert.equal(report.queued, 0);
      assert.equal(report.quarantined.length, 1);
      const [entry] = report.quarantined;
      assert.equal(entry.id, "spool.db");
      assert.match(entry.reason, /not a database/);
      assert.match(entry.path, /\/quarantine\/spool\.db\.\d{4}-/);
      assert.deepEqual(await Deno.readFile(entry.path), garbage);
      assert.match(logged.join("\n"), /starting with an empty spool/);
      const id = spool.newId();
      await spool.store(testEnvelope(id), bytes("after"));
      assert.equal(await spool.count(), 1);
    } finally {
      await spool.close();
    }
  }));

Deno.test("SqliteSpool open() fails loudly (without moving anything) when the directory is unusable", () =>
  withSpoolDir("ferry-spool-test-", async (dir) => {
    await Deno.mkdir(dir.replace(/\/spool$/, ""), { recursive: true });
    await Deno.writeTextFile(dir, "a file where the spool directory should be");
    const spool = new SqliteSpool({ dir });
    await assert.rejects(() => spool.open());
    assert.equal(await Deno.readTextFile(dir), "a file where the spool directory should be");
    await spool.close();
  }));

Deno.test("SqliteSpool: a second close() waits for the first, and writes queued before it are durable", async () => {
  await withSpoolDir("ferry-spool-test-", async (dir) => {
    const spool = new SqliteSpool({ dir });
    await spool.open();
    const data = new TextEncoder().encode("Subject: x\r\n\r\nbody\r\n");
    const ids = Array.from({ length: 20 }, () => spool.newId());
    const stores = ids.map((id) => spool.store(testEnvelope(id), data));
    let firstDone = false;
    const first = spool.close().then(() => (firstDone = true));
    await spool.close();
    assert.equal(firstDone, true, "the second close() resolved before the first finished");
    await first;
    await Promise.all(stores);
    const again = new SqliteSpool({ dir });
    await again.open();
    assert.deepEqual(new Set(await listed(again)), new Set(ids));
    await again.close();
  });
});

Deno.test("SqliteSpool answers a committed write with its result even when the commit observer throws", () =>
  withSpoolDir("ferry-spool-observer-", async (dir) => {
    const lines: string[] = [];
    const spool = new SqliteSpool({ dir, thread: "main", log: (line) => lines.push(line) });
    await spool.open();
    try {
      let observed = 0;
      spool.observeCommits(() => {
        observed++;
        throw new Error("metrics broke");
      });
      const id = spool.newId();
      const data = bytes("Subject: observed\r\n\r\nbody\r\n");
      // Stored: the store resolves (no 451 and resend for a message that is in the spool).
      await spool.store(testEnvelope(id, { size: data.length }), data);
      assert.equal(observed, 1);
      assert.deepEqual(await spool.readData(id), data);
      assert.ok(lines.some((l) => l.includes("commit observer failed: metrics broke")), lines.join("\n"));
    } finally {
      await spool.close();
    }
  }));
