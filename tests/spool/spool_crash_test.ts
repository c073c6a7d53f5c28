/**
 * Crash safety: a child process stores messages from 20 concurrent writers and prints each id only after
 * store() resolved; it is killed with SIGKILL mid-stream. On reopen every printed id must be present with
 * intact data, and nothing half-written may be listed or quarantined.
 */

import assert from "node:assert/strict";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";
import { sha256Hex } from "../../src/spool/_spool_db.ts";
import { CHILD_SCRIPT, parseChildOutput } from "./_helpers.ts";

/** Runs the child until `shouldKill(okCount, msSinceReady)` says so, then SIGKILLs it; returns its stdout. */
async function runAndKill(dir: string, shouldKill: (ok: number, ms: number) => boolean): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", CHILD_SCRIPT, dir, "20", "20000"],
    stdout: "piped",
    stderr: "null",
    stdin: "null",
  }).spawn();
  let text = "";
  try {
    const decoder = new TextDecoder();
    let readyAt: number | undefined;
    let ok = 0;
    let killed = false;
    const deadline = Date.now() + 30_000;
    for await (const chunk of child.stdout) {
      text += decoder.decode(chunk, { stream: true });
      if (killed) continue;
      if (readyAt === undefined && text.includes("READY\n")) readyAt = performance.now();
      ok = text.split("\nOK ").length - 1;
      if (readyAt !== undefined && shouldKill(ok, performance.now() - readyAt) || Date.now() > deadline) {
        child.kill("SIGKILL");
        killed = true;
      }
    }
    const status = await child.status;
    assert.equal(status.signal, "SIGKILL", "the child was killed, not finished");
    return text;
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
  }
}

async function crashAndCheck(
  shouldKill: (ok: number, ms: number) => boolean,
  minAcked: number,
): Promise<void> {
  const tmp = await Deno.makeTempDir({ prefix: "ferry-spool-crash-" });
  const dir = `${tmp}/spool`;
  try {
    const out = parseChildOutput(await runAndKill(dir, shouldKill));
    assert.equal(out.failed.length, 0, `unexpected failures: ${JSON.stringify(out.failed.slice(0, 3))}`);
    assert.ok(out.ok.size >= minAcked, `only ${out.ok.size} acknowledged before the kill`);

    const spool = new SqliteSpool({ dir });
    const report = await spool.open();
    try {
      assert.deepEqual(report.quarantined, []);
      const present = new Set((await spool.list()).map((e) => e.envelope.id));
      assert.equal(report.queued, present.size);
      for (const [id, digest] of out.ok) {
        assert.ok(present.has(id), `acknowledged message "${id}" was lost`);
        assert.equal(sha256Hex(await spool.readData(id)), digest, `data of "${id}" differs`);
      }
      // Whatever else is listed (committed but not yet printed) must be whole, too.
      const listed = await spool.list();
      assert.equal(listed.length, present.size);
      for (const { envelope } of listed) {
        const data = await spool.readData(envelope.id);
        assert.equal(data.length, envelope.size);
        assert.equal(sha256Hex(data), (envelope.policy as { sha256: string }).sha256);
      }
    } finally {
      await spool.close();
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
}

Deno.test("SqliteSpool loses no acknowledged message when killed early in a burst", async () => {
  await crashAndCheck((ok) => ok >= 60, 60);
});

Deno.test("SqliteSpool loses no acknowledged message when killed late in a burst", async () => {
  await crashAndCheck((ok) => ok >= 700, 700);
});

Deno.test("SqliteSpool loses no acknowledged message when killed at a random instant", async () => {
  // A random instant once writing has begun: a run in which nothing was acknowledged would check nothing.
  const at = 30 + Math.random() * 200;
  await crashAndCheck((ok, ms) => ok >= 1 && ms >= at, 1);
});
