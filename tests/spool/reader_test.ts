import assert from "node:assert/strict";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";
import { testEnvelope, withSpoolDir } from "./_helpers.ts";

Deno.test("a body read and a listing in progress on the reader do not delay an inbound commit", () =>
  withSpoolDir("ferry-reader-", async (dir) => {
    const spool = new SqliteSpool({ dir });
    await spool.open();
    try {
      const big = new Uint8Array(8 * 1024 * 1024).map((_, i) => i & 0xff);
      await spool.store(testEnvelope("big"), big);
      await Promise.all(
        Array.from({ length: 300 }, (_, i) => spool.store(testEnvelope(`m${i}`), new Uint8Array(100))),
      );
      // The reader's thread is busy, as during a long read; these two wait behind it.
      const release = await spool.occupyReaderForTest();
      let readDone = false;
      let listDone = false;
      const read = spool.readData("big").finally(() => (readDone = true));
      const list = spool.query({ limit: 10_000 }).finally(() => (listDone = true));
      try {
        // Inbound commits go on meanwhile: a store, then a delivery update and a removal.
        await spool.store(testEnvelope("during"), new TextEncoder().encode("Subject: x\r\n\r\nbody\r\n"));
        await spool.apply({ id: "m0", recipients: [{ index: 0, status: "delivered" }], state: "done" });
        assert.equal(readDone, false, "the body read is still waiting for the reader");
        assert.equal(listDone, false, "the listing is still waiting for the reader");
      } finally {
        release();
      }
      assert.deepEqual(await read, big);
      const ids = (await list).map((r) => r.id);
      assert.ok(
        ids.includes("big") && ids.includes("during") && !ids.includes("m0"),
        "it reads what was committed",
      );
      assert.equal(await spool.count(), 301);
    } finally {
      await spool.close();
    }
  }));

Deno.test("reads see every write committed before them (the reader is a second connection, not a stale copy)", () =>
  withSpoolDir("ferry-reader-", async (dir) => {
    const spool = new SqliteSpool({ dir });
    await spool.open();
    try {
      for (let i = 0; i < 20; i++) {
        await spool.store(testEnvelope(`r${i}`), new Uint8Array([i]));
        assert.deepEqual(await spool.readData(`r${i}`), new Uint8Array([i]));
        assert.equal((await spool.row(`r${i}`))?.state, "incoming");
        await spool.setState(`r${i}`, "hold", { reason: "test" });
        assert.equal((await spool.get(`r${i}`))?.id, `r${i}`);
        assert.equal((await spool.row(`r${i}`))?.state, "hold");
      }
      assert.equal((await spool.summary()).byState.hold, 20);
    } finally {
      await spool.close();
    }
  }));
