import assert from "node:assert/strict";
import { MemorySpool } from "../../src/spool/memory_spool.ts";
import { SpoolWriteError } from "../../src/spool/spool.ts";
import { testEnvelope } from "./_helpers.ts";

Deno.test("MemorySpool stores, lists, updates and removes like the real spool", async () => {
  const spool = new MemorySpool();
  await spool.open();
  const id = spool.newId();
  const data = new TextEncoder().encode("hello");
  await spool.store(testEnvelope(id), data);
  data[0] = 0; // the caller's buffer is not the stored one
  assert.deepEqual(await spool.readData(id), new TextEncoder().encode("hello"));
  const read = await spool.readData(id);
  read[0] = 0;
  assert.deepEqual(await spool.readData(id), new TextEncoder().encode("hello"));
  await spool.update(testEnvelope(id, { delivery: { tries: 1 } }));
  assert.deepEqual((await spool.get(id))?.delivery, { tries: 1 });
  assert.deepEqual((await spool.list()).map((e) => e.envelope.id), [id]);
  assert.equal(await spool.count(), 1);
  await spool.remove(id);
  assert.equal(await spool.get(id), undefined);
  await assert.rejects(() => spool.readData(id), Deno.errors.NotFound);
  await spool.close();
});

Deno.test("MemorySpool rejects duplicates, unknown updates and writes when closed", async () => {
  const spool = new MemorySpool();
  await assert.rejects(() => spool.store(testEnvelope("a"), new Uint8Array()), SpoolWriteError);
  await assert.rejects(() => spool.count(), /not open/);
  await spool.open();
  await spool.store(testEnvelope("a"), new Uint8Array([1]));
  await assert.rejects(() => spool.store(testEnvelope("a"), new Uint8Array([2])), SpoolWriteError);
  await assert.rejects(() => spool.update(testEnvelope("b")), SpoolWriteError);
  await assert.rejects(() => spool.store(testEnvelope(""), new Uint8Array()), TypeError);
  assert.deepEqual(await spool.readData("a"), new Uint8Array([1]));
});

Deno.test("MemorySpool can simulate a failing disk, changing nothing", async () => {
  let full = false;
  const spool = new MemorySpool({
    beforeWrite: () => {
      if (full) throw new Error("No space left on device");
    },
  });
  await spool.open();
  await spool.store(testEnvelope("a"), new Uint8Array([1]));
  full = true;
  await assert.rejects(() => spool.store(testEnvelope("b"), new Uint8Array([2])), SpoolWriteError);
  await assert.rejects(() => spool.remove("a"), SpoolWriteError);
  assert.equal(await spool.count(), 1);
  assert.equal(await spool.get("b"), undefined);
});
