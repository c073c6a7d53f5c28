/**
 * The report command end to end: Ferry as a process (deno run mod.ts) with spf(), dkim() and dmarc() over
 * unbound, dmarc.reports on; after a message, `kill -USR2 <pid>` queues the aggregate report at once, and the
 * history survives a restart (a report not yet sent is not lost).
 */

import assert from "node:assert/strict";
import { FerryProcess, sendMessage } from "../helpers/process.ts";
import { startUnbound } from "../helpers/unbound.ts";

Deno.test("SIGUSR2 queues the pending DMARC aggregate reports; the history survives a restart", async () => {
  const unbound = await startUnbound({
    zones: [{
      name: "sender.test",
      records: [
        `@ IN TXT "v=spf1 ip4:127.0.0.1 -all"`,
        `_dmarc IN TXT "v=DMARC1; p=none; rua=mailto:agg@sender.test"`,
      ].join("\n"),
    }],
  });
  const dir = await Deno.makeTempDir({ prefix: "ferry-dmarc-proc-" });
  const extra = `dns: { nameservers: [{ address: "127.0.0.1", port: ${unbound.port} }] },
    checks: [spf(), dkim(), dmarc()],
    dmarc: { reports: { email: "reports@ferry.test", interval: "1d" } },`;
  let f = await FerryProcess.start({ dir, extra, imports: ["spf", "dkim", "dmarc"] });
  try {
    await sendMessage(f.port, {
      from: "a@sender.test",
      content: "From: a@sender.test\r\nSubject: x\r\n\r\nb\r\n",
    });
    await f.waitFor(/DMARC accept for sender\.test/, 10_000);
    // Stopped before any report: the history keeps the message for the next run.
    await f.stop();
    f = await FerryProcess.start({ dir, extra, imports: ["spf", "dkim", "dmarc"] });
    f.signal("SIGUSR2");
    await f.waitFor(/SIGUSR2 received: sending DMARC aggregate reports/, 10_000);
    await f.waitFor(/DMARC: 1 aggregate report\(s\) queued/, 10_000);
    assert.match(
      f.stdout,
      /<= reports@ferry\.test U=ferry P=local S=\d+ for agg@sender\.test \(DMARC aggregate report for sender\.test\)/,
    );
    await f.stop();
    // What was reported is gone from the history: the next start has nothing to send.
    f = await FerryProcess.start({ dir, extra, imports: ["spf", "dkim", "dmarc"] });
    f.signal("SIGUSR2");
    await f.waitFor(/SIGUSR2 received: sending DMARC aggregate reports/, 10_000);
    await f.stop();
    assert.match(f.stdout, /DMARC: 0 aggregate report\(s\) queued/);
  } finally {
    await f.cleanup();
    await unbound.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
