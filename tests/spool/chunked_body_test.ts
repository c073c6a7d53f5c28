import assert from "node:assert/strict";
import { DatabaseSync } from "node:sqlite";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";
import { CorruptMessageError } from "../../src/spool/spool.ts";
import { CHUNK_SIZE } from "../../src/spool/_schema.ts";
import { testEnvelope, withSpoolDir } from "./_helpers.ts";
import { writeV2Spool } from "./_v2_spool.ts";

/** `n` octets that differ from chunk to chunk (a chunk swapped or repeated shows). */
function body(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 7 + Math.floor(i / 1000)) & 0xff;
  return out;
}

function chunkRows(dir: string, id: string): { seq: number; n: number }[] {
  const db = new DatabaseSync(`${dir}/spool.db`, { readOnly: true });
  try {
    return (db.prepare("SELECT seq, length(bytes) AS n FROM chunks WHERE id = ? ORDER BY seq").all(id) as {
      seq: number;
      n: number;
    }[]).map((r) => ({ seq: Number(r.seq), n: Number(r.n) }));
  } finally {
    db.close();
  }
}

for (const thread of ["worker", "main"] as const) {
  Deno.test(`SqliteSpool (${thread}) stores a body in chunks and reads it back whole, empty bodies included`, () =>
    withSpoolDir("ferry-chunks-", async (dir) => {
      const spool = new SqliteSpool({ dir, thread });
      await spool.open();
      const sizes = [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE + 12345];
      const bodies = sizes.map(body);
      // Transferred data arrives in the worker as a view at an offset: the chunks must follow the view.
      const backing = new Uint8Array(bodies[4].length + 10);
      backing.set(bodies[4], 7);
      await Promise.all(
        sizes.map((_, i) =>
          i === 4
            ? spool.store(testEnvelope(`m${i}`), backing.subarray(7, 7 + bodies[4].length), {
              transfer: true,
            })
            : spool.store(testEnvelope(`m${i}`), bodies[i])
        ),
      );
      await spool.close();
      assert.deepEqual(chunkRows(dir, "m0"), [{ seq: 0, n: 0 }]);
      assert.deepEqual(chunkRows(dir, "m3"), [{ seq: 0, n: CHUNK_SIZE }, { seq: 1, n: 1 }]);
      assert.deepEqual(chunkRows(dir, "m4").map((r) => r.n), [CHUNK_SIZE, CHUNK_SIZE, CHUNK_SIZE, 12345]);
      const again = new SqliteSpool({ dir, thread });
      await again.open();
      try {
        for (let i = 0; i < sizes.length; i++) {
          const back = await again.readData(`m${i}`);
          assert.equal(back.length, sizes[i]);
          assert.ok(back.every((b, j) => b === bodies[i][j]), `body ${i} reads back as stored`);
        }
        await again.remove("m4");
      } finally {
        await again.close();
      }
      assert.deepEqual(chunkRows(dir, "m4"), [], "remove() deletes the chunks");
    }));
}

Deno.test("a damaged chunked body is corrupt whatever the damage: a chunk missing, short, extra or changed", () =>
  withSpoolDir("ferry-chunks-", async (dir) => {
    const size = 2 * CHUNK_SIZE + 100;
    const damages: Record<string, (db: DatabaseSync, id: string) => void> = {
      missing: (db, id) => db.prepare("DELETE FROM chunks WHERE id = ? AND seq = 1").run(id),
      last: (db, id) => db.prepare("DELETE FROM chunks WHERE id = ? AND seq = 2").run(id),
      short: (db, id) =>
        db.prepare("UPDATE chunks SET bytes = substr(bytes, 1, 50) WHERE id = ? AND seq = 2").run(id),
      extra: (db, id) => db.prepare("INSERT INTO chunks (id, seq, bytes) VALUES (?, 3, x'00')").run(id),
      swapped: (db, id) => {
        db.prepare("UPDATE chunks SET seq = -1 WHERE id = ? AND seq = 0").run(id);
        db.prepare("UPDATE chunks SET seq = 0 WHERE id = ? AND seq = 1").run(id);
        db.prepare("UPDATE chunks SET seq = 1 WHERE id = ? AND seq = -1").run(id);
      },
      flipped: (db, id) =>
        db.prepare("UPDATE chunks SET bytes = zeroblob(length(bytes)) WHERE id = ? AND seq = 1").run(id),
    };
    const spool = new SqliteSpool({ dir });
    await spool.open();
    for (const name of Object.keys(damages)) await spool.store(testEnvelope(name), body(size));
    await spool.store(testEnvelope("sound"), body(size));
    await spool.close();
    const db = new DatabaseSync(`${dir}/spool.db`);
    for (const [name, damage] of Object.entries(damages)) damage(db, name);
    db.close();

    const logged: string[] = [];
    const again = new SqliteSpool({ dir, log: (l) => logged.push(l) });
    await again.open();
    try {
      for (const name of Object.keys(damages)) {
        const err = await again.readData(name).catch((e) => e);
        assert.ok(err instanceof CorruptMessageError, `${name}: ${err}`);
        assert.equal((await again.row(name))?.state, "corrupt", name);
      }
      assert.equal(logged.filter((l) => /moved to corrupt/.test(l)).length, Object.keys(damages).length);
      assert.deepEqual(await again.readData("sound"), body(size));
      assert.equal((await again.row("sound"))?.state, "incoming");
    } finally {
      await again.close();
    }
  }));

Deno.test("a schema-2 spool.db is converted at open without reading a body; its whole bodies still read and check", () =>
  withSpoolDir("ferry-chunks-", async (dir) => {
    const big = body(3 * CHUNK_SIZE + 5);
    const damaged = body(1000);
    writeV2Spool(dir, [
      { envelope: testEnvelope("old-big"), data: big },
      { envelope: testEnvelope("old-damaged"), data: damaged },
    ]);
    const raw = new DatabaseSync(`${dir}/spool.db`);
    raw.prepare("UPDATE data SET bytes = zeroblob(1000) WHERE id = ?").run("old-damaged");
    raw.close();

    const logged: string[] = [];
    const spool = new SqliteSpool({ dir, log: (l) => logged.push(l) });
    const report = await spool.open();
    try {
      assert.deepEqual(report.migrated, { from: 2, to: 3, messages: 2 });
      assert.match(logged.join("\n"), /converted spool.db from schema 2 to 3 \(2 message\(s\)\)/);
      assert.deepEqual(await spool.readData("old-big"), big);
      await assert.rejects(() => spool.readData("old-damaged"), CorruptMessageError);
      // New messages beside the old ones go in chunks.
      await spool.store(testEnvelope("new"), body(10));
      assert.deepEqual(await spool.readData("new"), body(10));
      await spool.remove("old-big");
    } finally {
      await spool.close();
    }
    const db = new DatabaseSync(`${dir}/spool.db`, { readOnly: true });
    try {
      assert.equal((db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version, 3);
      assert.equal(db.prepare("SELECT id FROM data WHERE id = 'old-big'").get(), undefined, "removed whole");
    } finally {
      db.close();
    }
    const again = new SqliteSpool({ dir });
    assert.deepEqual(
      await again.open(),
      { queued: 2, quarantined: [] },
      "nothing to convert the second time",
    );
    await again.close();
  }));
