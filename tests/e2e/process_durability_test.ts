/**
 * Durability of the whole program: Ferry as a child process takes mail from 20 concurrent SMTP clients and is
 * killed with SIGKILL mid-stream. Every message that got `250 … id=<id>` must be in the spool, whole, after
 * a restart; nothing half-written may be listed; the restart log says how many messages it recovered.
 */

import assert from "node:assert/strict";
import { RawClient } from "../helpers/ferry.ts";
import { FerryProcess } from "../helpers/process.ts";
import { waitFor } from "../helpers/downstream.ts";
import { SqliteSpool } from "../../src/spool/sqlite_spool.ts";

const dec = new TextDecoder();

/** One message's content: a unique Message-ID, a start marker, variable filler, an end marker. */
function message(marker: string, n: number): string {
  const filler: string[] = [];
  const lines = 1 + (n * 37) % 120;
  for (let i = 0; i < lines; i++) filler.push(`${marker} line ${i} ${"x".repeat(60)}`);
  return `Message-ID: <${marker}@client.test>\r\nSubject: ${marker}\r\n\r\nBEGIN ${marker}\r\n` +
    `${filler.join("\r\n")}\r\nEND ${marker}\r\n`;
}

/** Sends messages in a loop until the connection breaks; records `id → marker` for every 250. */
async function sender(port: number, client: number, acked: Map<string, string>, stop: () => boolean) {
  let c: RawClient | undefined;
  try {
    c = await RawClient.connect(port);
    if ((await c.reply())?.code !== 220) return;
    if ((await c.cmd("EHLO c" + client + ".test"))?.code !== 250) return;
    for (let n = 0; !stop(); n++) {
      const marker = `m-${client}-${n}-${crypto.randomUUID()}`;
      if ((await c.cmd(`MAIL FROM:<s${client}@sender.test>`))?.code !== 250) return;
      if ((await c.cmd(`RCPT TO:<r${n}@example.test>`))?.code !== 250) return;
      if ((await c.cmd("DATA"))?.code !== 354) return;
      const r = await c.cmd(message(marker, n) + ".");
      if (r?.code !== 250) return;
      const id = /^2\.0\.0 OK id=(\S+)$/.exec(r.text)?.[1];
      assert.ok(id, `250 names the id: ${r.text}`);
      acked.set(id, marker);
    }
  } catch {
    // The server was killed: a broken connection is expected.
  } finally {
    c?.close();
  }
}

Deno.test("after SIGKILL during 20 concurrent senders, every 250'd message is in the spool, whole", async () => {
  const first = await FerryProcess.start();
  let second: FerryProcess | undefined;
  try {
    const acked = new Map<string, string>();
    let stopping = false;
    const senders = Array.from({ length: 20 }, (_, i) => sender(first.port, i, acked, () => stopping));
    // Killed mid-stream once 20 messages are acknowledged (a fixed second was too little on a loaded
    // machine); the senders keep going until then and meanwhile.
    await waitFor(() => acked.size >= 20, 30_000, "20 messages acknowledged");
    first.signal("SIGKILL");
    const status = await first.wait(10_000);
    assert.equal(status?.signal, "SIGKILL");
    stopping = true;
    await Promise.all(senders);
    assert.ok(acked.size >= 20, `only ${acked.size} messages were acknowledged before the kill`);

    second = await FerryProcess.start({ dir: first.dir });
    const m = await second.waitFor(/spool \S+: (\d+) message\(s\) queued/);
    const recovered = Number(m[1]);
    assert.ok(recovered >= acked.size, `recovered ${recovered} < acknowledged ${acked.size}`);
    assert.doesNotMatch(second.stdout, /quarantine/, "nothing was quarantined");
    assert.equal((await second.stop()).code, 0);

    // The child is gone: now the test may open the spool itself.
    const spool = new SqliteSpool({ dir: first.spoolDir, thread: "main" });
    const report = await spool.open();
    try {
      assert.deepEqual(report.quarantined, []);
      assert.equal(report.queued, recovered);
      for (const [id, marker] of acked) {
        const env = await spool.get(id);
        assert.ok(env, `acknowledged message ${id} is in the spool`);
        const data = dec.decode(await spool.readData(id));
        assert.equal(new TextEncoder().encode(data).length, env.size, `size of ${id}`);
        assert.ok(data.includes(`BEGIN ${marker}\r\n`) && data.endsWith(`END ${marker}\r\n`), `${id} whole`);
        assert.match(data, new RegExp(`^Received: .*\\sid ${id}\\r\\n`, "s"));
      }
      // Committed but not yet answered messages may be there too; each of them must be whole as well.
      const listed = await spool.list();
      assert.equal(listed.length, recovered);
      for (const { envelope } of listed) {
        const data = await spool.readData(envelope.id);
        assert.equal(data.length, envelope.size, `size of ${envelope.id}`);
        const text = dec.decode(data);
        const marker = /^BEGIN (m-\S+)\r$/m.exec(text)?.[1];
        assert.ok(marker && text.endsWith(`END ${marker}\r\n`), `listed message ${envelope.id} is whole`);
      }
    } finally {
      await spool.close();
    }
  } finally {
    await second?.cleanup();
    await first.cleanup();
  }
});
