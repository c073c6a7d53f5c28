/**
 * Host-list functions (the extension point for Redis and other lookups) asked before the banner run under
 * `limits.policyTimeout` with an AbortSignal: a hung one ends in a 421 4.3.0 greeting (451 in a stage) and a log line
 * naming the list.
 */

import assert from "node:assert/strict";
import type { FerryConfig, HostListFn } from "../../mod.ts";
import { RawClient, startTestFerry } from "../helpers/ferry.ts";

/** A host-list function that never answers; records the signals it was given. */
function hung(): { fn: HostListFn; signals: AbortSignal[] } {
  const signals: AbortSignal[] = [];
  return {
    signals,
    fn: (_subject, { signal }) => {
      signals.push(signal);
      return new Promise<boolean>(() => {});
    },
  };
}

const cases: [string, (fn: HostListFn) => FerryConfig][] = [
  ["proxyRequiredHosts", (fn) => ({ proxyRequiredHosts: fn })],
  ["smtp.pipeliningAdvertiseHosts", (fn) => ({ smtp: { pipeliningAdvertiseHosts: fn } })],
  ["dsn.advertiseHosts", (fn) => ({ dsn: { advertiseHosts: fn } })],
];

for (const [list, config] of cases) {
  Deno.test(`a hung ${list} function gets 421 4.3.0 in place of the banner within limits.policyTimeout, logged`, async () => {
    const h = hung();
    const f = await startTestFerry({ ...config(h.fn), limits: { policyTimeout: "300ms" } });
    try {
      const c = await RawClient.connect(f.port);
      try {
        const t0 = Date.now();
        const r = await c.reply(5000);
        assert.equal(r?.code, 421, JSON.stringify(r));
        assert.match(r!.text, /^4\.3\.0 /);
        assert.ok(Date.now() - t0 < 3000, `answered at the deadline (${Date.now() - t0} ms)`);
        assert.ok(await c.closed());
      } finally {
        c.close();
      }
      assert.ok(
        f.memlog.has(
          new RegExp(
            `^SMTP connection from \\[127\\.0\\.0\\.1\\]:\\d+ refused: ${
              list.replace(/\./g, "\\.")
            }: host list function did not answer within 300 ms$`,
          ),
        ),
        f.memlog.lines.map((l) => l.text).join("\n"),
      );
      assert.equal(h.signals.length, 1);
      assert.equal(h.signals[0].aborted, true, "the function's signal was aborted");
    } finally {
      await f.stop();
      await Deno.remove(f.dir, { recursive: true }).catch(() => {});
    }
  });
}

Deno.test("a hung relay.clients function gets 451 4.3.0 at RCPT and its signal is aborted", async () => {
  const h = hung();
  const f = await startTestFerry({
    relay: { domains: ["example.test"], clients: h.fn },
    limits: { policyTimeout: "300ms" },
  });
  try {
    const c = await RawClient.connect(f.port);
    try {
      assert.equal((await c.reply())?.code, 220);
      assert.equal((await c.cmd("EHLO client.test"))?.code, 250);
      assert.equal((await c.cmd("MAIL FROM:<a@client.test>"))?.code, 250);
      const r = await c.cmd("RCPT TO:<x@elsewhere.test>");
      assert.equal(r?.code, 451, JSON.stringify(r));
      assert.match(r!.text, /^4\.3\.0 /);
    } finally {
      c.close();
    }
    assert.equal(h.signals[0]?.aborted, true);
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});
