/**
 * Host-list functions on the delivery side (route domains, transport lists) run under `limits.policyTimeout`
 * with an AbortSignal: a hung one defers the delivery within the deadline, with a log line naming the list,
 * and puts no host into back-off.
 */

import assert from "node:assert/strict";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import type { HostListFn } from "../../mod.ts";
import { linesOf, startDownstream, startFerryIn, submit, waitFor } from "../helpers/downstream.ts";

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

Deno.test("a hung routes[].domains function defers the recipient within limits.policyTimeout, naming the list", async () => {
  const h = hung();
  const up = await startFerryIn({
    routes: [{ domains: h.fn, hosts: ["127.0.0.1:9"] }],
    retry: [{ domains: "*", rules: [{ every: "1h", until: "2h" }] }],
    limits: { policyTimeout: "300ms" },
    delivery: { enable: true },
  }, { resolver: new MemoryResolver() });
  try {
    const t0 = Date.now();
    const id = await submit(up.port, ["user@example.test"]);
    await waitFor(() => linesOf(up.memlog, "==").length > 0, 8000, "a deferral");
    assert.ok(Date.now() - t0 < 5000);
    assert.match(
      linesOf(up.memlog, "==")[0],
      /^== user@example\.test .*routes\[0\]\.domains: host list function did not answer within 300 ms$/,
    );
    assert.equal((await up.spool.get(id))?.recipients[0].status, "pending");
    assert.equal(h.signals[0]?.aborted, true);
  } finally {
    await up.dispose();
  }
});

Deno.test("a hung transport host list (hostsRequireTls) defers that delivery within limits.policyTimeout, naming the list", async () => {
  const h = hung();
  const down = startDownstream();
  const up = await startFerryIn({
    routes: [{ name: "r", domains: "*", hosts: [`127.0.0.1:${down.port}`], hostsRequireTls: h.fn }],
    retry: [{ domains: "*", rules: [{ every: "1h", until: "2h" }] }],
    limits: { policyTimeout: "300ms" },
    delivery: { enable: true },
  }, { resolver: new MemoryResolver() });
  try {
    const id = await submit(up.port, ["user@example.test"]);
    await waitFor(() => linesOf(up.memlog, "==").length > 0, 8000, "a deferral");
    assert.ok(
      up.memlog.has(
        /^H=127\.0\.0\.1 \[127\.0\.0\.1\]:\d+ .*routes\[0\]\.hostsRequireTls: host list function did not answer within 300 ms \(errno HOSTLIST\)$/,
      ),
      up.memlog.lines.map((l) => l.text).join("\n"),
    );
    assert.equal(down.messages.length, 0);
    assert.equal((await up.spool.get(id))?.recipients[0].status, "pending");
    assert.equal(h.signals[0]?.aborted, true);
  } finally {
    await up.dispose();
    await down.stop();
  }
});
