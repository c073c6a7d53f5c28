import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";
import { CorruptMessageError, SpoolLockedError, SpoolWriteError } from "../../src/spool/spool.ts";
import { sha256Hex } from "../../src/spool/_spool_db.ts";
import { testEnvelope, withSpoolDir } from "./_helpers.ts";
import type { Envelope } from "../../src/core/envelope.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

function twoRecipients(id: string, extra: Partial<Envelope> = {}): Envelope {
  return testEnvelope(id, {
    recipients: [
      { address: "a@one.example", status: "pending", notify: ["FAILURE"] },
      { address: "b@two.example", status: "pending", orcpt: { type: "rfc822", address: "b@two.example" } },
    ],
    ...extra,
  });
}

Deno.test("claim() takes incoming before deferred, due ones only, earliest first, and marks them active", () =>
  withSpoolDir("ferry-queue-state-", async (dir) => {
    const spool = new SqliteSpool({ dir, thread: "main" });
    await spool.open();
    try {
      const late = testEnvelope("late", {
        recipients: [{ address: "x@d.example", status: "pending", attempts: 1, nextAttempt: 5_000 }],
      });
      const early = testEnvelope("early", {
        recipients: [{ address: "x@d.example", status: "pending", attempts: 2, nextAttempt: 1_000 }],
      });
      const fresh = testEnvelope("fresh", { receivedAt: 3_000 });
      for (const e of [late, early, fresh]) await spool.store(e, bytes(e.id));
      assert.deepEqual((await spool.row("late"))?.state, "deferred");
      assert.deepEqual((await spool.row("fresh"))?.state, "incoming");
      assert.equal(await spool.nextDue(), 1_000);

      const first = await spool.claim(4_000, 2);
      assert.deepEqual(first.map((c) => [c.id, c.from]), [["fresh", "incoming"], ["early", "deferred"]]);
      assert.equal((await spool.row("fresh"))?.state, "active");
      assert.deepEqual(await spool.claim(4_000, 10), [], "late is not due yet, the others are claimed");
      assert.equal(await spool.nextDue(), 5_000);
      assert.deepEqual((await spool.claim(6_000, 10)).map((c) => c.id), ["late"]);
      assert.equal(await spool.nextDue(), undefined);
    } finally {
      await spool.close();
    }
    // A claim that outlived its process goes back where it came from.
    const again = new SqliteSpool({ dir, thread: "main" });
    await again.open();
    try {
      assert.equal((await again.row("fresh"))?.state, "incoming");
      assert.equal((await again.row("late"))?.state, "deferred");
    } finally {
      await again.close();
    }
  }));

Deno.test("apply() changes one recipient's row only, queues reports in the same commit, and removes when done", () =>
  withSpoolDir("ferry-queue-state-", async (dir) => {
    const spool = new SqliteSpool({ dir });
    await spool.open();
    try {
      await spool.store(twoRecipients("m1"), bytes("body"));
      await spool.claim(Date.now(), 1);
      const report = testEnvelope("r1", {
        sender: "",
        recipients: [{ address: "sender@example.org", status: "pending" }],
      });
      await spool.apply({
        id: "m1",
        recipients: [{ index: 0, status: "failed", attempts: 1, lastError: "550 no such user" }],
        reports: [{ envelope: report, data: bytes("report") }],
        history: ["** a@one.example: 550 no such user"],
        state: "done",
      });
      const env = await spool.get("m1");
      assert.deepEqual(env?.recipients, [
        {
          address: "a@one.example",
          status: "failed",
          notify: ["FAILURE"],
          attempts: 1,
          lastError: "550 no such user",
        },
        { address: "b@two.example", status: "pending", orcpt: { type: "rfc822", address: "b@two.example" } },
      ]);
      assert.equal((await spool.row("m1"))?.state, "deferred", "one recipient is still pending");
      assert.deepEqual(await spool.readData("r1"), bytes("report"));
      assert.deepEqual((await spool.history("m1")).map((h) => h.text), [
        "** a@one.example: 550 no such user",
      ]);

      await spool.apply({
        id: "m1",
        recipients: [{ index: 1, status: "pending", attempts: 1, lastError: "451 later", nextAttempt: 9e12 }],
        state: "deferred",
      });
      assert.equal((await spool.row("m1"))?.nextAttempt, 9e12);
      // An operator's hold survives the end of an attempt that was already running.
      assert.equal(await spool.setState("m1", "hold"), true);
      await spool.apply({
        id: "m1",
        recipients: [{ index: 1, status: "pending", attempts: 2 }],
        state: "deferred",
      });
      assert.equal((await spool.row("m1"))?.state, "hold");

      await spool.apply({
        id: "m1",
        recipients: [{ index: 1, status: "delivered", attempts: 3 }],
        state: "done",
      });
      assert.equal(await spool.get("m1"), undefined, "nothing pending: removed");
      assert.deepEqual(await spool.history("m1"), []);
      await assert.rejects(() => spool.apply({ id: "m1", state: "done" }), SpoolWriteError);
    } finally {
      await spool.close();
    }
  }));

Deno.test("a write that fails inside a group commit is rolled back alone (savepoints)", () =>
  withSpoolDir("ferry-queue-state-", async (dir) => {
    const spool = new SqliteSpool({ dir, thread: "main" });
    await spool.open();
    await spool.close();
    // A trigger stands in for a write that fails half-way (after the message row, at the recipient rows).
    const db = new DatabaseSync(`${dir}/spool.db`);
    db.exec(`CREATE TRIGGER fail_bad BEFORE INSERT ON recipients WHEN NEW.address = 'bad@x.example'
      BEGIN SELECT RAISE(ABORT, 'simulated I/O error'); END`);
    db.close();
    const again = new SqliteSpool({ dir, thread: "main" });
    await again.open();
    try {
      const results = await Promise.allSettled([
        again.store(testEnvelope("ok1"), bytes("1")),
        again.store(
          testEnvelope("bad", { recipients: [{ address: "bad@x.example", status: "pending" }] }),
          bytes("b"),
        ),
        again.store(testEnvelope("ok2"), bytes("2")),
      ]);
      assert.deepEqual(results.map((r) => r.status), ["fulfilled", "rejected", "fulfilled"]);
      assert.match(String((results[1] as PromiseRejectedResult).reason), /simulated I\/O error/);
      assert.equal(again.stats.commits, 1, "all three were in one transaction");
      assert.equal(await again.row("bad"), undefined, "no half-written message row");
      assert.deepEqual((await again.query()).map((r) => r.id), ["ok1", "ok2"]);
    } finally {
      await again.close();
    }
  }));

Deno.test("data that fails its digest on read moves the message to corrupt, logged, kept, never claimed", () =>
  withSpoolDir("ferry-queue-state-", async (dir) => {
    const logged: string[] = [];
    const spool = new SqliteSpool({ dir, log: (l) => logged.push(l) });
    await spool.open();
    await spool.store(testEnvelope("victim"), bytes("original data"));
    await spool.store(testEnvelope("other"), bytes("other data"));
    await spool.close();
    const db = new DatabaseSync(`${dir}/spool.db`);
    db.prepare("UPDATE chunks SET bytes = ? WHERE id = ?").run(bytes("0riginal data"), "victim");
    db.close();

    const again = new SqliteSpool({ dir, log: (l) => logged.push(l) });
    assert.equal((await again.open()).queued, 2, "start-up does not read bodies");
    try {
      const err = await again.readData("victim").catch((e) => e);
      assert.ok(err instanceof CorruptMessageError);
      assert.equal(err.id, "victim");
      assert.match(logged.join("\n"), /message "victim" moved to corrupt: data digest does not match/);
      const row = await again.row("victim");
      assert.equal(row?.state, "corrupt");
      assert.match(row?.reason ?? "", /digest/);
      assert.deepEqual((await again.claim(Date.now(), 10)).map((c) => c.id), ["other"]);
      assert.equal(await again.count(), 2, "the corrupt message is kept as evidence");
      assert.deepEqual(await again.readData("other"), bytes("other data"));
    } finally {
      await again.close();
    }
  }));

Deno.test("claim() returns envelopes with recipient states, and data up to dataUpTo; bad data is reported", () =>
  withSpoolDir("ferry-queue-state-", async (dir) => {
    const logged: string[] = [];
    const spool = new SqliteSpool({ dir, log: (l) => logged.push(l) });
    await spool.open();
    try {
      await spool.store(twoRecipients("small", { receivedAt: 1_000 }), bytes("small body"));
      await spool.store(testEnvelope("large", { receivedAt: 2_000 }), bytes("x".repeat(100)));
      await spool.store(testEnvelope("damaged", { receivedAt: 3_000 }), bytes("damaged body"));
      await spool.apply({ id: "small", recipients: [{ index: 0, status: "delivered", attempts: 1 }] });
      await spool.close();
      const db = new DatabaseSync(`${dir}/spool.db`);
      db.prepare("UPDATE messages SET data_sha256 = ? WHERE id = ?").run(
        sha256Hex(bytes("other")),
        "damaged",
      );
      db.close();
      const again = new SqliteSpool({ dir, log: (l) => logged.push(l) });
      await again.open();
      try {
        const claimed = await again.claim(10_000, 10, { dataUpTo: 50 });
        assert.deepEqual(claimed.map((c) => c.id), ["small", "large", "damaged"]);
        const [small, large, damaged] = claimed;
        assert.deepEqual(small.envelope?.recipients.map((r) => r.status), ["delivered", "pending"]);
        assert.deepEqual(small.envelope?.recipients[1].orcpt, { type: "rfc822", address: "b@two.example" });
        assert.deepEqual(small.data, bytes("small body"));
        assert.equal(large.envelope?.id, "large");
        assert.equal(large.data, undefined, "larger than dataUpTo: read when needed");
        assert.equal(damaged.data, undefined);
        assert.match(damaged.corrupt ?? "", /digest/);
        assert.equal((await again.row("damaged"))?.state, "corrupt");
        assert.equal((await again.row("large"))?.state, "active");
        assert.deepEqual((await again.claim(10_000, 10)).length, 0);
      } finally {
        await again.close();
      }
    } finally {
      await spool.close();
    }
  }));

Deno.test("only one process opens a spool: a second gets SpoolLockedError naming the directory", () =>
  withSpoolDir("ferry-queue-state-", async (dir) => {
    const first = new SqliteSpool({ dir });
    await first.open();
    try {
      const second = new SqliteSpool({ dir });
      await assert.rejects(() => second.open(), (err: Error) => {
        assert.ok(err instanceof SpoolLockedError);
        assert.ok(err.message.includes(`"${dir}"`), err.message);
        return true;
      });
      // Another process, too (flock is per open file).
      const child = await new Deno.Command(Deno.execPath(), {
        args: [
          "eval",
          `import { SqliteSpool } from "${new URL("../../src/spool/sqlite_spool.ts", import.meta.url).href}";
           await new SqliteSpool({ dir: ${JSON.stringify(dir)} }).open().then(() => console.log("OPENED"),
             (e) => console.log(e.name));
           Deno.exit(0);`,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(new TextDecoder().decode(child.stdout).trim(), "SpoolLockedError");
      // A read-only opener (the queue command) may look while Ferry runs.
      const reader = new SqliteSpool({ dir, readOnly: true, thread: "main" });
      await reader.open();
      assert.equal(await reader.count(), 0);
      await assert.rejects(() => reader.remove("x"), SpoolWriteError);
      await reader.close();
    } finally {
      await first.close();
    }
    const third = new SqliteSpool({ dir });
    await third.open();
    await third.close();
  }));

Deno.test("a spool worker that dies is restarted; one that keeps dying reports fatal", () =>
  withSpoolDir("ferry-queue-state-", async (dir) => {
    const logged: string[] = [];
    const fatal: Error[] = [];
    const spool = new SqliteSpool({
      dir,
      log: (l) => logged.push(l),
      onFatal: (e) => fatal.push(e),
      // (maxRestarts default 3 in 60 s)
    });
    await spool.open();
    try {
      await spool.store(testEnvelope("before"), bytes("b"));
      const restarts = () => logged.filter((l) => /spool worker restarted/.test(l)).length;
      await spool.crashWorkerForTest();
      // Positive signal: the restart's log line (requests meanwhile may fail, as a dead disk's would).
      while (restarts() === 0) await spool.count().catch(() => {});
      assert.match(logged.join("\n"), /spool worker failed: .*crash requested; starting a new spool worker/i);
      await spool.store(testEnvelope("after"), bytes("a"));
      assert.equal(await spool.count(), 2);
      assert.equal(sha256Hex(await spool.readData("before")), sha256Hex(bytes("b")));
      assert.deepEqual(fatal, []);
      for (let i = 0; i < 3 && fatal.length === 0; i++) {
        const before = restarts();
        await spool.crashWorkerForTest().catch(() => {});
        // Positive signal: the restart's log line, or the fatal report.
        while (restarts() === before && fatal.length === 0) await spool.count().catch(() => {});
      }
      assert.equal(fatal.length, 1, "the fourth death within a minute is fatal");
      assert.match((fatal[0] as Error).message, /failed 4 times/);
      await assert.rejects(() => spool.store(testEnvelope("never"), bytes("n")), SpoolWriteError);
    } finally {
      await spool.close().catch(() => {});
    }
  }));

Deno.test("query() pages and filters by state, sender, recipient, domain and age; summary() counts", () =>
  withSpoolDir("ferry-queue-state-", async (dir) => {
    const spool = new SqliteSpool({ dir, thread: "main" });
    await spool.open();
    try {
      await spool.store(twoRecipients("m1", { receivedAt: 1_000 }), bytes("1"));
      await spool.store(testEnvelope("m2", { sender: "Other@Example.org", receivedAt: 2_000 }), bytes("2"));
      await spool.store(testEnvelope("m3", { receivedAt: 3_000 }), bytes("3"));
      await spool.setState("m3", "hold", { reason: "operator" });
      const ids = async (q = {}) => (await spool.query(q)).map((r) => r.id);
      assert.deepEqual(await ids({ limit: 2 }), ["m1", "m2"]);
      assert.deepEqual(await ids({ after: "m2" }), ["m3"]);
      assert.deepEqual(await ids({ state: "hold" }), ["m3"]);
      assert.deepEqual(await ids({ sender: "other@example.org" }), ["m2"]);
      assert.deepEqual(await ids({ recipient: "B@two.example" }), ["m1"]);
      assert.deepEqual(await ids({ domain: "TWO.example." }), ["m1"]);
      assert.deepEqual(await ids({ receivedBefore: 2_000 }), ["m1", "m2"]);
      assert.deepEqual(await ids({ receivedAfter: 2_500 }), ["m3"]);
      const [m1] = await spool.query({ limit: 1 });
      assert.deepEqual({ ...m1, nextAttempt: undefined }, {
        id: "m1",
        state: "incoming",
        nextAttempt: undefined,
        receivedAt: 1_000,
        sender: "sender@example.org",
        size: 1,
        pending: 2,
        recipients: 2,
      });
      const summary = await spool.summary();
      assert.deepEqual(summary.byState, { incoming: 2, active: 0, deferred: 0, hold: 1, corrupt: 0 });
      assert.deepEqual(summary.byDomain[0], { domain: "example.com", messages: 2, recipients: 2 });
      assert.equal(summary.byDomain.length, 3);
    } finally {
      await spool.close();
    }
  }));
