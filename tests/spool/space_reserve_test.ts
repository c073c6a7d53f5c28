/**
 * The spool's space reserve on a small tmpfs (needs root for mount; skipped otherwise): with the WAL emptied
 * and the disk filled to the last block, a delivery outcome that removes a message is still committed (the
 * reserve is given up for it), new messages are refused, the removed message's space goes back to the file
 * system, and once there is room the reserve is put back and messages are accepted again.
 */

import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";
import { SpoolWriteError } from "../../src/spool/spool.ts";
import { RESERVE_FILE, SPACE_RESERVE, SpoolDb } from "../../src/spool/_spool_db.ts";
import { testEnvelope } from "./_helpers.ts";
import { availableBytes, fillUp, mountTmpfs, umount } from "../helpers/tmpfs.ts";

const root = Deno.uid() === 0;
const MB = 1024 * 1024;

for (const thread of ["worker", "main"] as const) {
  Deno.test({
    name:
      `SqliteSpool (${thread}) on a full disk: removals still commit through the reserve, space goes back`,
    ignore: !root,
    async fn() {
      const dir = await Deno.makeTempDir({ prefix: "ferry-reserve-" });
      await mountTmpfs(dir, "20m");
      const spoolDir = `${dir}/spool`;
      const logged: string[] = [];
      const spool = new SqliteSpool({ dir: spoolDir, thread, log: (l) => logged.push(l), giveBackBelow: MB });
      try {
        await spool.open();
        assert.equal(Deno.statSync(`${spoolDir}/${RESERVE_FILE}`).size, SPACE_RESERVE, "the reserve is made");
        const bodies = [0, 1, 2].map((i) => new Uint8Array(2 * MB).fill(65 + i));
        for (let i = 0; i < 3; i++) await spool.store(testEnvelope(`m${i}`), bodies[i]);
        // An empty WAL: even a delete must grow it now.
        const side = new DatabaseSync(`${spoolDir}/spool.db`);
        side.prepare("PRAGMA wal_checkpoint(TRUNCATE)").all();
        side.close();
        assert.equal(Deno.statSync(`${spoolDir}/spool.db-wal`).size, 0);
        fillUp(`${dir}/filler`);
        const full = availableBytes(dir);

        // The queue manager claims on the full disk (the reserve is given up for it) ...
        const claimed = await spool.claim(Date.now() + 60_000, 10);
        assert.deepEqual(claimed.map((c) => c.id).sort(), ["m0", "m1", "m2"]);
        assert.ok(
          logged.some((l) => /disk full .*released the \d+ octet reserve/.test(l)),
          logged.join("\n"),
        );
        // ... while new messages are refused.
        await assert.rejects(() => spool.store(testEnvelope("new"), new Uint8Array(1000)), SpoolWriteError);
        // Delivered: the outcome and the removal commit on the full disk.
        await spool.apply({ id: "m0", recipients: [{ index: 0, status: "delivered" }], state: "done" });
        assert.equal(await spool.get("m0"), undefined);
        assert.ok(
          availableBytes(dir) - full > MB,
          "the delivered message's space went back to the file system",
        );
        await assert.rejects(
          () => spool.store(testEnvelope("new2"), new Uint8Array(1000)),
          SpoolWriteError,
          "still short: no new messages until the reserve is back",
        );
        assert.deepEqual(await spool.readData("m1"), bodies[1], "the others are intact");
        assert.deepEqual(await spool.readData("m2"), bodies[2]);

        await Deno.remove(`${dir}/filler`);
        await spool.store(testEnvelope("after"), new Uint8Array(1000));
        assert.equal(Deno.statSync(`${spoolDir}/${RESERVE_FILE}`).size, SPACE_RESERVE, "the reserve is back");
        assert.ok(logged.some((l) => /reserve is restored/.test(l)));
        assert.equal(await spool.count(), 3);
      } finally {
        await spool.close();
        await umount(dir);
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    },
  });
}

Deno.test({
  name:
    "SpoolDb: a store that fills the disk half-way through a group commit does not take the removal with it",
  ignore: !root,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "ferry-reserve-mid-" });
    await mountTmpfs(dir, "16m");
    const logged: string[] = [];
    const db = new SpoolDb(`${dir}/spool`, { log: (l) => logged.push(l) });
    try {
      db.open();
      assert.deepEqual(
        db.commit([{ kind: "store", envelope: testEnvelope("m0"), data: new Uint8Array(MB) }]),
        [
          { ok: true },
        ],
      );
      fillUp(`${dir}/filler`);
      // SQLite ends the whole transaction when the disk fills inside a statement: the commit's failure, so the
      // reserve is given up and the batch runs again with the store refused and the removal kept.
      const results = db.commit([
        { kind: "store", envelope: testEnvelope("big"), data: new Uint8Array(8 * MB).fill(65) },
        { kind: "remove", id: "m0" },
      ]);
      assert.equal(results[0].ok, false);
      assert.match((results[0] as { message: string }).message, /short of space/);
      assert.deepEqual(results[1], { ok: true });
      assert.equal(db.get("m0"), undefined, "the removal committed");
      assert.ok(logged.some((l) => /disk full .*released the \d+ octet reserve/.test(l)), logged.join("\n"));
    } finally {
      db.close();
      await umount(dir);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});
