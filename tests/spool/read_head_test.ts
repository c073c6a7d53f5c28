/** Spool.readHead(): the first octets of a body from the chunks that hold them, old unchunked bodies too. */

import assert from "node:assert/strict";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";
import { CHUNK_SIZE } from "../../src/spool/_schema.ts";
import { testEnvelope, withSpoolDir } from "./_helpers.ts";
import { writeV2Spool } from "./_v2_spool.ts";

function body(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 7 + Math.floor(i / 1000)) & 0xff;
  return out;
}

Deno.test("readHead() returns the first octets across chunk boundaries, all of a short body, undefined when unknown", () =>
  withSpoolDir("ferry-head-", async (dir) => {
    const spool = new SqliteSpool({ dir });
    await spool.open();
    try {
      const big = body(3 * CHUNK_SIZE + 99);
      await spool.store(testEnvelope("big"), big);
      await spool.store(testEnvelope("small"), body(10));
      await spool.store(testEnvelope("empty"), new Uint8Array(0));
      assert.deepEqual(await spool.readHead("big", 100), big.subarray(0, 100));
      assert.deepEqual(await spool.readHead("big", CHUNK_SIZE + 5), big.subarray(0, CHUNK_SIZE + 5));
      assert.deepEqual(await spool.readHead("big", 10 * CHUNK_SIZE), big);
      assert.deepEqual(await spool.readHead("small", 64 * 1024), body(10));
      assert.equal((await spool.readHead("empty", 100))?.length, 0);
      assert.equal(await spool.readHead("nope", 100), undefined);
    } finally {
      await spool.close();
    }
  }));

Deno.test("readHead() reads a body stored whole by the schema-2 code", () =>
  withSpoolDir("ferry-head-", async (dir) => {
    const old = body(CHUNK_SIZE * 2);
    writeV2Spool(dir, [{ envelope: testEnvelope("old"), data: old }]);
    const spool = new SqliteSpool({ dir });
    await spool.open();
    try {
      assert.deepEqual(await spool.readHead("old", 1000), old.subarray(0, 1000));
    } finally {
      await spool.close();
    }
  }));
