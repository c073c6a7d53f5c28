/**
 * Claims and delivery outcomes commit without their own fsync, and must still leave a checkpoint synced. SQLite runs
 * its automatic checkpoint at the end of whichever commit took the WAL past 1,000 pages; under
 * synchronous=OFF that checkpoint copies WAL frames into spool.db without syncing it, and the next write
 * starts the WAL again over those frames: a power cut then can lose messages already acknowledged with 250.
 * Under synchronous=NORMAL (what such commits use) the checkpoint syncs spool.db before the WAL is reused.
 *
 * Seen from the kernel, as a power cut cannot be tested: a child process stores and claims one message at a
 * time under `strace -f -y` until a checkpoint happened inside a claim (the wal-index's backfill count moved
 * during it), and every pwrite64 to spool.db in that claim must be followed by an fsync/fdatasync of it.
 */

import assert from "node:assert/strict";

const haveStrace = new Deno.Command("strace", { args: ["-V"], stdout: "null", stderr: "null" }).outputSync()
  .success;

/**
 * What both children start with: a spool on this thread in the directory given, and `mark()`, a line on stderr
 * (a write(2) in the trace) that brackets the calls to look at.
 */
const PREAMBLE = `
import { SqliteSpool } from ${
  JSON.stringify(new URL("../../src/spool/sqlite_spool.ts", import.meta.url).href)
};
const dir = Deno.args[0];
const spool = new SqliteSpool({ dir, thread: "main" });
await spool.open();
const mark = (s) => Deno.stderr.writeSync(new TextEncoder().encode(s + "\\n"));
`;

/** Runs `code` (after PREAMBLE) under `strace -f -y`; returns its stdout and the trace's lines. */
async function traceChild(code: string): Promise<{ stdout: string; lines: string[] }> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-sync-trace-" });
  try {
    const trace = `${dir}/trace`;
    const out = await new Deno.Command("strace", {
      args: [
        "-f",
        "-y",
        "-e",
        "trace=pwrite64,fsync,fdatasync,write",
        "-o",
        trace,
        Deno.execPath(),
        "eval",
        "--ext=ts",
        PREAMBLE + code,
        `${dir}/spool`,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
    return {
      stdout: new TextDecoder().decode(out.stdout),
      lines: (await Deno.readTextFile(trace)).split("\n"),
    };
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** The trace lines between the child's `mark(start)` and `mark(end)`. */
function between(lines: string[], start: string, end: string): string[] {
  const from = lines.findIndex((l) => l.includes(`${start}\\n`));
  const to = lines.findIndex((l) => l.includes(`${end}\\n`));
  assert.ok(from >= 0 && to > from, `the markers ${start} and ${end} are in the trace`);
  return lines.slice(from, to);
}

const CLAIM_CHILD = `
// The wal-index's checkpoint info (after two 48-octet header copies): nBackfill, frames copied to spool.db.
const backfill = () => {
  const shm = Deno.readFileSync(dir + "/spool.db-shm");
  return new DataView(shm.buffer, shm.byteOffset).getUint32(96, true);
};
const body = new Uint8Array(3000).fill(0x41);
for (let round = 0; round < 4000; round++) {
  await spool.store({ id: "m" + round, sender: "a@example.org",
    recipients: [{ address: "r@example.com", status: "pending" }], size: body.length,
    receivedAt: Date.now(), protocol: "esmtp", client: { ip: "127.0.0.1", port: 1 }, receivedBy: "child.test" },
    body.slice());
  const before = backfill();
  mark("CLAIM-START " + round);
  const claimed = await spool.claim(Date.now() + 60_000, 1);
  mark("CLAIM-END " + round);
  if (claimed.length !== 1) throw new Error("nothing claimed in round " + round);
  if (backfill() !== before) {
    console.log("CHECKPOINTED-IN " + round);
    break;
  }
}
await spool.close();
`;

Deno.test({
  name: "A checkpoint run by a claim's unsynced commit still syncs spool.db before the WAL is reused",
  ignore: !haveStrace,
  async fn() {
    const { stdout, lines } = await traceChild(CLAIM_CHILD);
    const round = /CHECKPOINTED-IN (\d+)/.exec(stdout)?.[1];
    assert.ok(round !== undefined, `no checkpoint happened inside a claim: ${stdout}`);
    const inClaim = between(lines, `CLAIM-START ${round}`, `CLAIM-END ${round}`);
    const db = (l: string) => /<[^>]*\/spool\.db>/.test(l);
    const lastBackfill = inClaim.findLastIndex((l) => /pwrite64\(/.test(l) && db(l));
    assert.ok(lastBackfill >= 0, "the checkpoint wrote pages into spool.db during the claim");
    const synced = inClaim.slice(lastBackfill).some((l) => /(fsync|fdatasync)\(/.test(l) && db(l));
    assert.ok(
      synced,
      "spool.db synced after the checkpoint wrote into it:\n" + inClaim.slice(-20).join("\n"),
    );
  },
});

const OUTCOME_CHILD = `
const envelope = (id) => ({ id, sender: "a@example.org", size: 100, receivedAt: Date.now(), protocol: "esmtp",
  recipients: [{ address: "r@example.com", status: "pending" }, { address: "s@example.com", status: "pending" }],
  client: { ip: "127.0.0.1", port: 1 }, receivedBy: "child.test" });
mark("STORE-START");
await spool.store(envelope("m1"), new Uint8Array(100).fill(0x41));
mark("STORE-END");
mark("APPLY-START");
await spool.apply({ id: "m1", recipients: [{ index: 0, status: "delivered" }] });
mark("APPLY-END");
// Then a store: its sync makes the outcome durable with it.
await spool.store(envelope("m2"), new Uint8Array(100).fill(0x42));
const m1 = await spool.get("m1");
console.log(JSON.stringify(m1.recipients.map((r) => r.status)));
await spool.close();
`;

Deno.test({
  name: "A delivery outcome commits without waiting for an fsync; a store still waits for one",
  ignore: !haveStrace,
  async fn() {
    const { stdout, lines } = await traceChild(OUTCOME_CHILD);
    assert.deepEqual(JSON.parse(stdout.trim()), ["delivered", "pending"]);
    const wal = (l: string) => /<[^>]*\/spool\.db-wal>/.test(l);
    const store = between(lines, "STORE-START", "STORE-END");
    const apply = between(lines, "APPLY-START", "APPLY-END");
    assert.ok(store.some((l) => /pwrite64\(/.test(l) && wal(l)), "the store wrote the WAL");
    assert.ok(store.some((l) => /(fsync|fdatasync)\(/.test(l) && wal(l)), "the store synced the WAL");
    assert.ok(apply.some((l) => /pwrite64\(/.test(l) && wal(l)), "the outcome wrote the WAL");
    assert.ok(
      !apply.some((l) => /(fsync|fdatasync)\(/.test(l)),
      "the outcome waited for no sync:\n" + apply.join("\n"),
    );
  },
});
