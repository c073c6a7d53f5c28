/**
 * The spool never needs SQLite's temporary directory (needs root to mount a tmpfs; skipped otherwise). A
 * group commit in which one write fails runs again with a savepoint for each write; with SQLite's default
 * temp_store the savepoints' statement journal spills into an unlinked file in SQLITE_TMPDIR, TMPDIR or
 * /var/tmp once a batch has touched 64 KiB of pages. A full /tmp or /var/tmp must not refuse mail on a spool
 * disk with room (and those extra writes cost two pwrite()s per page on the commit path).
 */

import assert from "node:assert/strict";
import { fillUp, mountTmpfs, umount } from "../helpers/tmpfs.ts";

const root = Deno.uid() === 0;

// A child process: SQLite reads SQLITE_TMPDIR once, at its first use in the process.
const CHILD = `
import { SqliteSpool } from ${
  JSON.stringify(new URL("../../src/spool/sqlite_spool.ts", import.meta.url).href)
};
const [dir, thread] = Deno.args;
const spool = new SqliteSpool({ dir, thread, log: (l) => console.error(l) });
await spool.open();
const body = new Uint8Array(10 * 1024).fill(0x41);
// Every 21st store repeats the id before it: refused, so its batch runs again with savepoints.
const results = await Promise.allSettled(Array.from({ length: 420 }, (_, k) => spool.store({
  id: "m" + (k % 21 === 20 ? k - 1 : k), sender: "a@example.org", recipients: [{ address: "r" + k + "@example.com", status: "pending" }],
  size: body.length, receivedAt: Date.now(), protocol: "esmtp", client: { ip: "127.0.0.1", port: 1 },
  receivedBy: "child.test",
}, body.slice())));
const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason?.message);
const other = failed.filter((m) => !/already in the spool/.test(m));
console.log(JSON.stringify({ stored: results.length - failed.length, refused: failed.length, count: await spool.count(),
  first: other[0], writes: spool.stats.writes, commits: spool.stats.commits }));
await spool.close();
`;

for (const thread of ["worker", "main"] as const) {
  Deno.test({
    name: `SqliteSpool (${thread}) stores batches with SQLite's temporary directory full`,
    ignore: !root,
    async fn() {
      const tmp = await Deno.makeTempDir({ prefix: "ferry-sqlite-tmp-" });
      const spoolDir = await Deno.makeTempDir({ prefix: "ferry-spool-" });
      await mountTmpfs(tmp, "64k");
      try {
        // Fill the temporary directory to the last block.
        fillUp(`${tmp}/filler`);
        const out = await new Deno.Command(Deno.execPath(), {
          args: ["eval", "--ext=ts", CHILD, spoolDir, thread],
          env: { SQLITE_TMPDIR: tmp, TMPDIR: tmp },
          stdout: "piped",
          stderr: "piped",
        }).output();
        const stderr = new TextDecoder().decode(out.stderr);
        assert.ok(out.success, stderr);
        const result = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
        // Group commit did form batches (else no savepoint journal would grow past 64 KiB anyway).
        assert.ok(result.commits < result.writes / 4, JSON.stringify(result));
        assert.equal(result.first, undefined, JSON.stringify(result));
        assert.equal(result.refused, 20, "the repeated ids, and nothing else");
        assert.equal(result.stored, 400);
        assert.equal(result.count, 400);
      } finally {
        await umount(tmp);
        await Deno.remove(tmp, { recursive: true }).catch(() => {});
        await Deno.remove(spoolDir, { recursive: true }).catch(() => {});
      }
    },
  });
}
