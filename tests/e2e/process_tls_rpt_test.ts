/**
 * The TLS-RPT trigger end to end: Ferry as a process with `tlsRpt` on and unbound publishing `_smtp._tls`;
 * the results of a finished day (yesterday, written as a previous run left them) are reported at once on
 * `kill -USR2 <pid>` (the same signal as DMARC reports), the report is delivered through the queue to
 * Postfix's smtp-sink, and after a restart the same signal sends nothing again.
 */

import assert from "node:assert/strict";
import { FerryProcess } from "../helpers/process.ts";
import { freePort, startSink } from "../helpers/sink.ts";
import { startUnbound } from "../helpers/unbound.ts";
import { waitFor } from "../helpers/downstream.ts";

Deno.test("SIGUSR2 sends the TLS-RPT reports of finished days once; a restart does not send them again", async () => {
  const unbound = await startUnbound({
    zones: [{ name: "seen.test", records: `_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tls@reports.test"` }],
  });
  const sink = await startSink(await freePort());
  const dir = await Deno.makeTempDir({ prefix: "ferry-tlsrpt-proc-" });
  const yesterday = new Date(Date.now() - 86_400_000).toISOString().slice(0, 10);
  await Deno.mkdir(`${dir}/spool`, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/spool/tls-rpt-results.json`,
    JSON.stringify({
      [yesterday]: {
        "seen.test": {
          policies: {
            sts: {
              policyType: "sts",
              success: 4,
              failures: {
                x: {
                  resultType: "certificate-expired",
                  mxHost: "mx.seen.test",
                  receivingIp: "192.0.2.7",
                  count: 2,
                },
              },
            },
          },
        },
      },
    }),
  );
  const set = {
    delivery: `{ enable: true }`,
    routes: `[{ domains: "reports.test", hosts: ["127.0.0.1:${sink.port}"] }]`,
  };
  const extra = `dns: { nameservers: [{ address: "127.0.0.1", port: ${unbound.port} }] },
    tlsRpt: { enable: true, email: "tlsrpt@ferry.test" },`;
  let f = await FerryProcess.start({ dir, extra, set });
  try {
    // The listener answers before start-up ends; the signal finds the reporter only after this line.
    await f.waitFor(/Ferry started as/, 30_000);
    f.signal("SIGUSR2");
    await f.waitFor(/SIGUSR2 received: sending TLS-RPT reports of finished days/, 30_000);
    // The summary comes after the results file was rewritten and synced twice (sent, then finished): one
    // run on a busy machine had the report delivered but not this line within 30 s.
    await f.waitFor(/TLS-RPT: 1 report\(s\) handed off, 0 to try again/, 60_000);
    assert.match(
      f.stdout,
      new RegExp(`TLS-RPT report for seen\\.test on ${yesterday} queued for <tls@reports\\.test>`),
    );
    await waitFor(async () => (await sink.messages()).length === 1, 60_000, "the report at the sink");
    const [message] = await sink.messages();
    assert.match(message, /^TLS-Report-Domain: seen\.test$/m);
    assert.match(message, /^Content-Type: multipart\/report; report-type="tlsrpt"/m);
    await f.stop();
    f = await FerryProcess.start({ dir, extra, set });
    await f.waitFor(/Ferry started as/, 30_000);
    f.signal("SIGUSR2");
    await f.waitFor(/TLS-RPT: 0 report\(s\) handed off, 0 to try again/, 60_000);
    assert.doesNotMatch(f.stdout, /queued for <tls@reports\.test>/);
  } finally {
    await f.cleanup();
    await sink.stop();
    await unbound.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
