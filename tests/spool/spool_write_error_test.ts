/**
 * A real write failure: the child runs under RLIMIT_FSIZE (`ulimit -f`, with SIGXFSZ ignored so writes
 * fail with EFBIG) and stores until commits fail. Every failure must be a SpoolWriteError; on reopen
 * without the limit every acknowledged message is intact and no failed one is visible.
 */

import assert from "node:assert/strict";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";
import { sha256Hex } from "../../src/spool/_spool_db.ts";
import { CHILD_SCRIPT, parseChildOutput } from "./_helpers.ts";

Deno.test("SqliteSpool turns a file-size limit (EFBIG) into SpoolWriteError and keeps what it acknowledged", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-spool-efbig-" });
  const dir = `${tmp}/spool`;
  try {
    const script = `trap '' XFSZ; ulimit -f 256; exec "$0" run --allow-all "$1" "$2" 20 8192 10`;
    const child = new Deno.Command("bash", {
      args: ["-c", script, Deno.execPath(), CHILD_SCRIPT, dir],
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
    }).spawn();
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
    let output: Deno.CommandOutput;
    try {
      output = await child.output();
    } finally {
      clearTimeout(timer);
    }
    const text = new TextDecoder().decode(output.stdout);
    assert.ok(output.success, `child failed: ${new TextDecoder().decode(output.stderr)}`);
    const out = parseChildOutput(text);
    assert.ok(out.lines.includes("DONE"), "the child survived the write errors and finished");
    assert.ok(out.ok.size > 0, "some stores succeeded before the limit");
    assert.ok(out.failed.length >= 10, `expected failures, got ${out.failed.length}`);
    for (const failure of out.failed) assert.equal(failure.name, "SpoolWriteError", failure.message);

    const spool = new SqliteSpool({ dir });
    const report = await spool.open();
    try {
      assert.deepEqual(report.quarantined, []);
      assert.equal(report.queued, out.ok.size);
      for (const [id, digest] of out.ok) {
        assert.equal(sha256Hex(await spool.readData(id)), digest, `acknowledged "${id}" damaged or lost`);
      }
      for (const { id } of out.failed) {
        assert.equal(await spool.get(id), undefined, `failed "${id}" is visible`);
      }
    } finally {
      await spool.close();
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
