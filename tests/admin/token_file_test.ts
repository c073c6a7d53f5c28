/** The generated admin token file: created exclusively with mode 0600, never written through a symlink. */

import assert from "node:assert/strict";
import { ensureTokenFile } from "../../src/admin/token_file.ts";

Deno.test("ensureTokenFile: creates the file 0600 once, reuses it, and replaces a symlink or a short file instead of writing through it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-token-" });
  try {
    const spool = `${dir}/spool`;
    const first = await ensureTokenFile(spool);
    assert.equal(first.created, true);
    assert.equal(first.path, `${spool}/admin.token`);
    assert.ok(first.token.length >= 40);
    assert.equal((await Deno.stat(first.path)).mode! & 0o777, 0o600);
    assert.equal((await Deno.readTextFile(first.path)).trim(), first.token);
    const again = await ensureTokenFile(spool);
    assert.deepEqual(again, { ...first, created: false });

    // A good token with loose permissions is kept and tightened.
    await Deno.chmod(first.path, 0o644);
    assert.equal((await ensureTokenFile(spool)).token, first.token);
    assert.equal((await Deno.stat(first.path)).mode! & 0o777, 0o600);

    // A symlink planted at admin.token (dangling here) is not followed: its target is never created.
    await Deno.remove(first.path);
    const target = `${dir}/elsewhere.txt`;
    await Deno.symlink(target, first.path);
    const replaced = await ensureTokenFile(spool);
    assert.equal(replaced.created, true);
    await assert.rejects(() => Deno.lstat(target), Deno.errors.NotFound);
    const st = await Deno.lstat(first.path);
    assert.ok(st.isFile && !st.isSymlink);
    assert.equal(st.mode! & 0o777, 0o600);
    assert.equal((await Deno.readTextFile(first.path)).trim(), replaced.token);
    assert.notEqual(replaced.token, first.token);

    // A symlink to a readable file elsewhere is replaced too, and that file is left alone.
    await Deno.writeTextFile(target, "someone-elses-token-0123456789\n", { mode: 0o644 });
    await Deno.remove(first.path);
    await Deno.symlink(target, first.path);
    const own = await ensureTokenFile(spool);
    assert.equal(own.created, true);
    assert.notEqual(own.token, "someone-elses-token-0123456789");
    assert.equal((await Deno.stat(target)).mode! & 0o777, 0o644);
    assert.equal(await Deno.readTextFile(target), "someone-elses-token-0123456789\n");
    assert.ok((await Deno.lstat(first.path)).isFile);

    // A file too short to be a token is replaced by a new one, 0600.
    await Deno.writeTextFile(first.path, "short\n");
    await Deno.chmod(first.path, 0o644);
    const fresh = await ensureTokenFile(spool);
    assert.equal(fresh.created, true);
    assert.equal((await Deno.stat(first.path)).mode! & 0o777, 0o600);
    assert.equal((await Deno.readTextFile(first.path)).trim(), fresh.token);
    // No temporary files are left behind.
    const names = [];
    for await (const e of Deno.readDir(spool)) names.push(e.name);
    assert.deepEqual(names, ["admin.token"]);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
