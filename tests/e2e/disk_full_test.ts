/**
 * A spool on a small tmpfs: `spool.minFree` refuses at MAIL (with SIZE) before any data is sent, a disk that
 * fills during DATA answers 452 4.3.1 with nothing stored, and mail is accepted again once space returns;
 * on a disk filled to the last block, queued mail is still delivered when its destination comes back, the
 * space it leaves is given back, and mail is accepted again without anything else being freed.
 * Needs root (mount); skipped otherwise.
 */

import assert from "node:assert/strict";
import { RawClient } from "../helpers/ferry.ts";
import { type DirFerry, startDownstream, startFerryIn, waitFor } from "../helpers/downstream.ts";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import { availableBytes, fillUp, mountTmpfs, umount, usedBytes } from "../helpers/tmpfs.ts";

const root = Deno.uid() === 0;
const MB = 1024 * 1024;

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
      const fillerSize = 24 * MB - 10 * MB - usedBytes(dir);
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

Deno.test({
  name: "disk full to the last block: deliveries are recorded, their space given back, inbound accepts again",
  ignore: !root,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "ferry-diskfull-" });
    await mountTmpfs(dir, "32m");
    // The destination is down at first: a free port nobody listens on until it "comes back".
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const destPort = (probe.addr as Deno.NetAddr).port;
    probe.close();
    let ferry: DirFerry | undefined;
    let down: ReturnType<typeof startDownstream> | undefined;
    try {
      ferry = await startFerryIn({
        spool: { dir: `${dir}/spool`, minFree: "1MB" },
        routes: [{ domains: "*", hosts: [`127.0.0.1:${destPort}`] }],
        delivery: { queueInterval: "200ms" },
      }, { dir, resolver: new MemoryResolver() });
      // Four messages of 3 MB queue up for the dead destination.
      const bodies: string[] = [];
      for (let i = 0; i < 4; i++) {
        const line = `${i}`.repeat(78) + "\r\n";
        bodies.push(`Subject: queued ${i}\r\n\r\n` + line.repeat(Math.ceil(3 * MB / line.length)));
        const r = await sendBody(ferry.port, bodies[i]);
        assert.equal(r?.code, 250, r?.text);
      }
      await waitFor(
        async () => (await ferry!.spool.query({ state: "deferred" })).length === 4,
        15_000,
        "deferred",
      );

      // Fill the file system to its last block.
      fillUp(`${dir}/filler`);
      const full = availableBytes(dir);
      // The free-space figure is re-measured at most once a second.
      let refused: { code: number; text: string } | null = null;
      await waitFor(
        async () => {
          const probe = await session(ferry!.port);
          try {
            refused = await probe.cmd(`MAIL FROM:<a@client.test> SIZE=${1000}`);
            return refused?.code === 452;
          } finally {
            probe.close();
          }
        },
        15_000,
        "MAIL with SIZE refused on a full disk",
      );
      assert.match(refused!.text, /^4\.3\.1 /);
      const c = await session(ferry.port);
      const noSize = await c.cmd("MAIL FROM:<a@client.test>");
      assert.equal(noSize?.code, 452, `MAIL without SIZE on a full disk: ${noSize?.text}`);
      assert.match(noSize!.text, /^4\.3\.1 /);
      c.close();
      assert.equal(await ferry.spool.count(), 4, "nothing half-stored, nothing lost");

      // The destination comes back: everything queued is delivered although the disk is still full.
      down = startDownstream({ port: destPort });
      await ferry.queueOps.flush();
      await waitFor(() => down!.messages.length === 4, 30_000, "delivery of the queued messages");
      assert.deepEqual(
        down.messages.map((m) => m.data.slice(m.data.indexOf("Subject:"))).sort(),
        bodies.sort(),
      );
      await waitFor(async () => (await ferry!.spool.count()) === 0, 15_000, "the delivered messages removed");
      // Their space goes back to the file system (the filler is still there).
      await waitFor(() => availableBytes(dir) - full > 8 * MB, 15_000, "space given back");

      // And inbound accepts again, SIZE included.
      await waitFor(
        async () => {
          const probe = await session(ferry!.port);
          try {
            return (await probe.cmd(`MAIL FROM:<a@client.test> SIZE=${1000}`))?.code === 250;
          } finally {
            probe.close();
          }
        },
        15_000,
        "MAIL accepted again",
      );
      const after = await sendBody(ferry.port, "Subject: after\r\n\r\nsmall\r\n");
      assert.equal(after?.code, 250, after?.text);
      await waitFor(() => down!.messages.length === 5, 15_000, "delivery of the new message");
    } finally {
      await ferry?.stop();
      await down?.stop();
      await umount(dir);
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  },
});

/** Sends `body` (CRLF lines, no final dot) as one message; returns the final reply. */
async function sendBody(port: number, body: string): Promise<{ code: number; text: string } | null> {
  const c = await session(port);
  try {
    assert.equal((await c.cmd("MAIL FROM:<a@client.test>"))?.code, 250);
    assert.equal((await c.cmd("RCPT TO:<b@dest.test>"))?.code, 250);
    assert.equal((await c.cmd("DATA"))?.code, 354);
    await c.send(body + ".\r\n");
    return await c.reply(30_000);
  } finally {
    c.close();
  }
}
