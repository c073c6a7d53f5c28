/**
 * A spool on a small tmpfs: `spool.minFree` refuses at MAIL (with SIZE) before any data is sent, a disk that
 * fills during DATA answers 452 4.3.1 with nothing stored, and mail is accepted again once space returns.
 * Needs root (mount); skipped otherwise.
 */

import assert from "node:assert/strict";
import { RawClient } from "../helpers/ferry.ts";
import { type DirFerry, startFerryIn } from "../helpers/downstream.ts";

const root = Deno.uid() === 0;
const MB = 1024 * 1024;

async function mountTmpfs(dir: string, size: string): Promise<void> {
  const out = await new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", dir] })
    .output();
  if (!out.success) throw new Error(`mount failed: ${new TextDecoder().decode(out.stderr)}`);
}

async function umount(dir: string): Promise<void> {
  await new Deno.Command("umount", { args: [dir] }).output();
}

async function session(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  assert.equal((await c.reply())?.code, 220);
  assert.equal((await c.cmd("EHLO client.test"))?.code, 250);
  return c;
}

/** Sends a message of `size` octets without SIZE; returns the final reply. */
async function sendBig(port: number, size: number): Promise<{ code: number; text: string } | null> {
  const c = await session(port);
  try {
    assert.equal((await c.cmd("MAIL FROM:<a@client.test>"))?.code, 250);
    assert.equal((await c.cmd("RCPT TO:<b@dest.test>"))?.code, 250);
    assert.equal((await c.cmd("DATA"))?.code, 354);
    const line = "x".repeat(78) + "\r\n";
    const body = "Subject: big\r\n\r\n" + line.repeat(Math.ceil(size / line.length)) + ".\r\n";
    await c.send(body);
    return await c.reply(30_000);
  } finally {
    c.close();
  }
}

Deno.test({
  name: "disk full: 452 4.3.1 at MAIL by spool.minFree, 452 during DATA with nothing stored, accepting again",
  ignore: !root,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "ferry-diskfull-" });
    await mountTmpfs(dir, "24m");
    let ferry: DirFerry | undefined;
    try {
      ferry = await startFerryIn({
        spool: { dir: `${dir}/spool`, minFree: "4MB" },
        delivery: { enable: false },
      }, { dir });
      // Leave about 10 MB available.
      const fillerSize = 24 * MB - 10 * MB - (await usedBytes(dir));
      await Deno.writeFile(`${dir}/filler`, new Uint8Array(Math.max(0, fillerSize)));

      // SIZE that would leave less than minFree: refused at MAIL, before the client sends any data.
      const c = await session(ferry.port);
      const refused = await c.cmd(`MAIL FROM:<a@client.test> SIZE=${8 * MB}`);
      assert.equal(refused?.code, 452);
      assert.match(refused!.text, /^4\.3\.1 /);
      // A small declared size still fits.
      assert.equal((await c.cmd(`MAIL FROM:<a@client.test> SIZE=${1000}`))?.code, 250);
      await c.cmd("QUIT");
      c.close();
      assert.ok(
        ferry.memlog.has(/rejected MAIL FROM:<a@client.test>: 452 4.3.1 Insufficient system storage/),
      );

      // No SIZE: MAIL passes, the disk fills during the commit: 452 4.3.1, nothing stored.
      const before = await ferry.spool.count();
      const big = await sendBig(ferry.port, 12 * MB);
      assert.equal(big?.code, 452, big?.text);
      assert.match(big!.text, /^4\.3\.1 /);
      assert.equal(await ferry.spool.count(), before, "nothing half-stored");
      assert.ok(ferry.memlog.has(/spool write failed/));

      // Space comes back: mail is accepted again.
      await Deno.remove(`${dir}/filler`);
      const ok = await sendBig(ferry.port, 1000);
      assert.equal(ok?.code, 250, ok?.text);
      assert.equal(await ferry.spool.count(), before + 1);
    } finally {
      await ferry?.stop();
      await umount(dir);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

/** Octets used on the file system holding `dir` (statfs). */
async function usedBytes(dir: string): Promise<number> {
  const { statfsSync } = await import("node:fs");
  const s = statfsSync(dir);
  return (Number(s.blocks) - Number(s.bavail)) * Number(s.bsize);
}
