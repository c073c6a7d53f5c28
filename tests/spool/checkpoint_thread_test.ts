/**
 * A spool on worker threads copies its WAL into spool.db on a thread of its own (sqlite_spool.ts), so the
 * writer never waits for the copy and for spool.db's fsync. What must still hold: each checkpoint syncs the
 * WAL before it writes spool.db and spool.db after (else a power cut after the WAL starts over loses mail
 * already acknowledged); the WAL does start over (it is not left to grow while writes keep coming); and a
 * checkpoint thread that cannot be brought back gives the work back to the writer, also to a writer restarted
 * after that.
 */

import assert from "node:assert/strict";
import { RESTART_FRAMES, SqliteSpool } from "../../src/spool/sqlite_spool.ts";
import { AUTO_CHECKPOINT_PAGES, ROOMY } from "../../src/spool/_spool_db.ts";
import { availableBytes, mountTmpfs, umount } from "../helpers/tmpfs.ts";
import { waitFor } from "../helpers/downstream.ts";
import { dirname } from "node:path";
import { testEnvelope, withSpoolDir } from "./_helpers.ts";

const PAGE = 4096;
const BODY = new Uint8Array(10 * 1024).fill(0x41);

const haveStrace = new Deno.Command("strace", { args: ["-V"], stdout: "null", stderr: "null" }).outputSync()
  .success;

/** Stores `n` messages, 50 at a time (a group commit each); calls `each` after every group. */
async function storeMany(spool: SqliteSpool, n: number, prefix: string, each?: () => void): Promise<void> {
  for (let i = 0; i < n; i += 50) {
    await Promise.all(
      Array.from(
        { length: Math.min(50, n - i) },
        (_, k) => spool.store(testEnvelope(`${prefix}-${String(i + k).padStart(6, "0")}`), BODY.slice()),
      ),
    );
    each?.();
  }
}

/**
 * With less than ROOMY free the writer keeps its checkpoints (#roomForCheckpointsElsewhere), by design, and a
 * test of the checkpoint thread would prove nothing: says so instead.
 */
function needRoomForCheckpointThread(dir: string): void {
  const free = availableBytes(dirname(dir));
  assert.ok(free > 2 * ROOMY, `this test needs ${2 * ROOMY} octets free where it runs, has ${free}`);
}

function walSize(dir: string): number {
  try {
    return Deno.statSync(`${dir}/spool.db-wal`).size;
  } catch {
    return 0;
  }
}

Deno.test("checkpoints leave the writer, and the WAL still starts over: it stays near RESTART_FRAMES pages", async () => {
  await withSpoolDir("ferry-ckpt-wal-", async (dir) => {
    needRoomForCheckpointThread(dir);
    const spool = new SqliteSpool({ dir });
    await spool.open();
    let largest = 0;
    // ~5 RESTART_FRAMES' worth of pages (a store takes its body's pages and about two more): without the
    // writer finishing a checkpoint now and then, the WAL would hold all of it.
    const n = Math.ceil((2.6 * RESTART_FRAMES * PAGE) / (BODY.length + 2 * PAGE)) * 2;
    try {
      await storeMany(spool, n, "w", () => (largest = Math.max(largest, walSize(dir))));
      assert.equal(await spool.count(), n);
    } finally {
      await spool.close();
    }
    // Past SQLite's own 1,000-page checkpoint: the writer did not checkpoint at the end of its commits.
    assert.ok(largest > (AUTO_CHECKPOINT_PAGES + 200) * PAGE, `largest WAL ${largest} octets`);
    // And it started over instead of growing with every write.
    assert.ok(largest < 2 * RESTART_FRAMES * PAGE, `largest WAL ${largest} octets`);
  });
});

Deno.test({
  name: "with less than ROOMY free, the writer checkpoints as SQLite does: the WAL stays near 1,000 pages",
  ignore: Deno.uid() !== 0,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "ferry-ckpt-tight-" });
    await mountTmpfs(dir, `${Math.floor(ROOMY / 1024 / 1024 / 2)}m`);
    try {
      const spool = new SqliteSpool({ dir: `${dir}/spool` });
      await spool.open();
      let largest = 0;
      try {
        await storeMany(spool, 1_500, "t", () => (largest = Math.max(largest, walSize(`${dir}/spool`))));
      } finally {
        await spool.close();
      }
      assert.ok(
        largest > 0 && largest < (AUTO_CHECKPOINT_PAGES + 400) * PAGE,
        `largest WAL ${largest} octets`,
      );
    } finally {
      await umount(dir);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

/** Kills the checkpoint thread until it is not brought back; `lines` is the spool's log. */
async function loseCheckpointThread(spool: SqliteSpool, lines: string[]): Promise<void> {
  // The worker engine brings a dead thread back three times a minute; the fourth death is for good.
  for (let i = 0; i < 4 && !lines.some((l) => l.includes("checkpoint thread is gone")); i++) {
    await spool.crashCheckpointerForTest();
    await waitFor(
      () => lines.filter((l) => /starting a new spool worker|checkpoint thread is gone/.test(l)).length > i,
      20_000,
      `a restart (or the end) logged after crash ${i + 1}`,
    );
  }
  assert.ok(lines.some((l) => l.includes("the checkpoint thread is gone, the writer checkpoints itself")));
}

/**
 * Stores 50 messages, makes the checkpoint thread die for good, runs `meanwhile`, then stores 1,500 more;
 * returns the largest WAL seen during those.
 */
async function walWithoutCheckpointThread(
  dir: string,
  meanwhile?: (spool: SqliteSpool, lines: string[]) => Promise<void>,
): Promise<number> {
  const lines: string[] = [];
  const spool = new SqliteSpool({ dir, log: (line) => lines.push(line) });
  await spool.open();
  let largest = 0;
  try {
    await storeMany(spool, 50, "before");
    await loseCheckpointThread(spool, lines);
    await meanwhile?.(spool, lines);
    await storeMany(spool, 1_500, "after", () => (largest = Math.max(largest, walSize(dir))));
    assert.equal(await spool.count(), 1_550);
  } finally {
    await spool.close();
  }
  return largest;
}

Deno.test("a checkpoint thread that cannot be brought back gives checkpoints back to the writer", async () => {
  await withSpoolDir("ferry-ckpt-gone-", async (dir) => {
    const largest = await walWithoutCheckpointThread(dir);
    // SQLite's own checkpoint at 1,000 pages again (a batch of 50 stores adds ~200 pages past it).
    assert.ok(largest > 0 && largest < (AUTO_CHECKPOINT_PAGES + 400) * PAGE, `largest WAL ${largest} octets`);
  });
});

Deno.test("a writer restarted after the checkpoint thread is gone for good still checkpoints itself", async () => {
  await withSpoolDir("ferry-ckpt-gone-restart-", async (dir) => {
    needRoomForCheckpointThread(dir);
    const largest = await walWithoutCheckpointThread(dir, async (spool, lines) => {
      // The writer dies too: the one brought back opens the spool with the options it is given, which must
      // say the checkpoints are its own (a writer that left them to the thread would let the WAL grow).
      await spool.crashWorkerForTest();
      // The writer's reopen (the checkpoint thread's found no messages).
      await waitFor(
        () => lines.some((l) => /spool worker restarted, 50 message\(s\) queued/.test(l)),
        20_000,
        "the writer restarted",
      );
    });
    // SQLite's own checkpoint at 1,000 pages, on the new writer (a batch of 50 stores adds ~200 pages past it).
    assert.ok(largest > 0 && largest < (AUTO_CHECKPOINT_PAGES + 400) * PAGE, `largest WAL ${largest} octets`);
  });
});

Deno.test({
  name:
    "checkpoints sync the WAL before writing spool.db; the WAL starts over only once spool.db is synced; copies run off the writer",
  ignore: !haveStrace,
  fn: async () => {
    await withSpoolDir("ferry-ckpt-trace-", async (dir) => {
      const code = `
import { SqliteSpool } from ${
        JSON.stringify(new URL("../../src/spool/sqlite_spool.ts", import.meta.url).href)
      };
const spool = new SqliteSpool({ dir: Deno.args[0] });
await spool.open();
const body = new Uint8Array(10240).fill(65);
for (let i = 0; i < 2400; i += 50) {
  await Promise.all(Array.from({ length: 50 }, (_, k) => spool.store({ id: "m" + (i + k), sender: "a@b.test",
    recipients: [{ address: "r@d.test", status: "pending" }], receivedAt: Date.now(), size: body.length }, body.slice())));
}
await spool.close();
`;
      const trace = await Deno.makeTempFile({ prefix: "ferry-ckpt-trace-" });
      const out = await new Deno.Command("strace", {
        args: [
          "-f",
          "-y",
          "-e",
          "trace=pwrite64,fsync,fdatasync",
          "-o",
          trace,
          Deno.execPath(),
          "eval",
          "--ext=ts",
          code,
          dir,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      const lines = (await Deno.readTextFile(trace)).split("\n");
      await Deno.remove(trace);
      // In time order (a call that strace splits is taken where it returns):
      // - a thread writes spool.db only after it synced the WAL (SQLite's checkpoint syncs the WAL first);
      // - the WAL starts over (its 32-octet header written at offset 0 again) only once spool.db was synced
      //   after the last page written to it: a partial checkpoint does not sync spool.db, the WAL still holds
      //   those pages then, and must not be written over before the copy is durable.
      const threads = new Map<
        string,
        { walSynced: boolean; inCopy: boolean; dbWrites: number; walWrites: number }
      >();
      const pending = new Map<string, { file: string; at: number }>();
      let lastDbWrite = -1;
      let dbSyncedAfterWrite = true;
      let restarts = 0;
      let headers = 0;
      const isDb = (f: string) => /\/spool\.db>$/.test(f);
      const isWal = (f: string) => /\/spool\.db-wal>$/.test(f);
      const synced = (tid: string, file: string, at: number) => {
        if (isWal(file)) threads.get(tid)!.walSynced = true;
        if (isDb(file) && at > lastDbWrite) dbSyncedAfterWrite = true;
      };
      lines.forEach((line, at) => {
        const tid = /^(\d+)\s/.exec(line)?.[1];
        if (tid === undefined) return;
        const t = threads.get(tid) ?? { walSynced: false, inCopy: false, dbWrites: 0, walWrites: 0 };
        threads.set(tid, t);
        // The end of a pwrite64 that strace split in two changes nothing.
        if (/<\.\.\. pwrite64 resumed>/.test(line)) return;
        // A checkpoint's copy is one unbroken run of pwrite64s to spool.db in its thread.
        const dbWrite = /^\d+\s+pwrite64\(\d+<[^>]*\/spool\.db>/.test(line);
        const startsCopy = dbWrite && !t.inCopy;
        t.inCopy = dbWrite;
        const resumed = /<\.\.\. f(?:data)?sync resumed>.*= 0/.test(line);
        if (resumed && pending.has(tid)) {
          const p = pending.get(tid)!;
          pending.delete(tid);
          synced(tid, p.file, p.at);
          return;
        }
        const call = /^\d+\s+(pwrite64|fsync|fdatasync)\(\d+(<[^>]*>)/.exec(line);
        if (!call) return;
        const file = call[2];
        if (call[1] !== "pwrite64") {
          if (line.includes("<unfinished")) pending.set(tid, { file, at });
          else if (/= 0$/.test(line)) synced(tid, file, at);
          return;
        }
        // pwrite64(fd, data, count, offset): the last argument.
        const offset = Number(/,\s*\d+,\s*(\d+)(?:\)\s*=.*|\s*<unfinished \.\.\.>)$/.exec(line)?.[1]);
        if (isWal(file)) {
          t.walWrites++;
          if (offset === 0 && headers++ > 0) {
            assert.ok(dbSyncedAfterWrite, `the WAL started over before spool.db was synced: ${line}`);
            restarts++;
          }
        } else if (isDb(file) && headers > 0) {
          if (startsCopy) {
            assert.ok(
              t.walSynced,
              `a checkpoint in thread ${tid} wrote spool.db before syncing the WAL: ${line}`,
            );
            t.walSynced = false;
          }
          t.dbWrites++;
          lastDbWrite = at;
          dbSyncedAfterWrite = false;
        }
      });
      assert.ok(restarts >= 1, `the WAL never started over (${headers} header writes)`);
      assert.ok(dbSyncedAfterWrite, "spool.db was left written and not synced at the end");
      const writers = [...threads.values()].filter((t) => t.walWrites > 0);
      const others = [...threads.values()].filter((t) => t.walWrites === 0);
      const onWriter = writers.reduce((a, t) => a + t.dbWrites, 0);
      const offWriter = others.reduce((a, t) => a + t.dbWrites, 0);
      assert.ok(
        offWriter > onWriter,
        `spool.db pages written off the writer ${offWriter}, on it ${onWriter}`,
      );
    });
  },
});
