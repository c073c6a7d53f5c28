/**
 * The security engine's local host lists, enforced by the transport: a host that must be authenticated and
 * does not offer STARTTLS (a STARTTLS-stripping attacker) is deferred, never sent to in clear; every delivery
 * and deferral names its decision (TLS=…); an IP-literal route host is verified against IP SANs.
 */
import assert from "node:assert/strict";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import type { FerryEvents } from "../../src/events/types.ts";
import type { EventHandlers, FerryConfig } from "../../mod.ts";
import { startTestFerry } from "../helpers/ferry.ts";
import { createPki, ferryTls } from "../helpers/pki.ts";
import {
  linesOf,
  startDownstream,
  startFerryIn,
  submit,
  waitFor,
  withTlsDownstream,
} from "../helpers/downstream.ts";

function resolver(): MemoryResolver {
  return new MemoryResolver({
    records: {
      "example.test": { MX: [{ preference: 10, exchange: "mx.example.test" }] },
      "mx.example.test": { A: ["127.0.0.1"] },
    },
  });
}

for (const option of ["tlsVerifyHosts", "hostsRequireOcsp"] as const) {
  Deno.test(`${option}: a peer that does not offer STARTTLS is deferred, nothing is sent in clear`, async () => {
    // The scripted downstream never advertises STARTTLS, as a peer behind a STARTTLS-stripping middlebox.
    const down = startDownstream();
    const defers: FerryEvents["msg:host:defer"][] = [];
    const events: EventHandlers = { "msg:host:defer": (p) => void defers.push(p) };
    const up = await startFerryIn({
      routes: [{ domains: "*", mx: true, port: down.port }],
      delivery: { enable: true, [option]: "*" },
      events,
    }, { resolver: resolver() });
    try {
      const id = await submit(up.port, ["user@example.test"]);
      await waitFor(() => linesOf(up.memlog, "==").length > 0, 8000, "a deferral");
      const line = linesOf(up.memlog, "==")[0];
      assert.match(
        line,
        new RegExp(
          `^== user@example\\.test R=mx0 T=smtp defer H=mx\\.example\\.test \\[127\\.0\\.0\\.1\\]:\\d+ TLS=pkix: ${option}: TLS required but STARTTLS not offered`,
        ),
      );
      assert.equal(down.messages.length, 0, "nothing delivered in clear");
      assert.equal(linesOf(up.memlog, "=>").length, 0);
      assert.equal((await up.spool.get(id))?.recipients[0].status, "pending");
      await waitFor(() => defers.length > 0, 8000, "msg:host:defer");
      assert.deepEqual(defers[0].security, {
        policy: "pkix",
        tlsRequired: "authenticated",
        mxRequired: "none",
        requiredBy: option,
      });
      assert.equal(defers[0].errno, "TLS");
    } finally {
      await up.dispose();
      await down.stop();
    }
  });
}

Deno.test("without any requirement the same peer gets the mail in clear, logged as TLS=none", async () => {
  const down = startDownstream();
  const up = await startFerryIn({
    routes: [{ domains: "*", mx: true, port: down.port }],
    delivery: { enable: true },
  }, { resolver: resolver() });
  try {
    await submit(up.port, ["user@example.test"]);
    await waitFor(() => linesOf(up.memlog, "=>").length > 0, 8000, "a delivery");
    assert.match(linesOf(up.memlog, "=>")[0], / H=mx\.example\.test \[127\.0\.0\.1\]:\d+ TLS=none C=/);
    assert.equal(down.messages.length, 1);
  } finally {
    await up.dispose();
    await down.stop();
  }
});

async function deliverOnce(port: number, extra: FerryConfig, events?: EventHandlers) {
  const delivered: FerryEvents["msg:delivery"][] = [];
  const up = await startFerryIn({
    routes: [{ domains: "*", mx: true, port }],
    ...extra,
    events: { "msg:delivery": (p) => void delivered.push(p), ...events },
    delivery: { enable: true, ...extra.delivery },
  }, { resolver: resolver() });
  try {
    await submit(up.port, ["user@example.test"]);
    await waitFor(() => delivered.length > 0, 8000, "msg:delivery");
    return { line: linesOf(up.memlog, "=>")[0], event: delivered[0] };
  } finally {
    await up.dispose();
  }
}

Deno.test("deliveries name the decision: TLS=opportunistic without a trusted CA, TLS=pkix with one", async () => {
  await withTlsDownstream(async ({ pki, down }) => {
    const plain = await deliverOnce(down.port, {});
    assert.match(plain.line, / CV=no TLS=opportunistic C=/);
    assert.deepEqual(plain.event.security, {
      policy: "opportunistic",
      tlsRequired: "none",
      mxRequired: "none",
    });
    const verified = await deliverOnce(down.port, {
      delivery: { tlsVerifyCertificates: pki.certFile, tlsVerifyHosts: "*" },
    });
    assert.match(verified.line, / CV=yes TLS=pkix C=/);
    assert.deepEqual(verified.event.security, {
      policy: "pkix",
      tlsRequired: "authenticated",
      mxRequired: "none",
      requiredBy: "tlsVerifyHosts",
    });
    assert.equal(verified.event.tls?.dane, false);
  });
});

/** A Ferry downstream whose certificate carries `sans`, reached by an IP-literal route host. */
async function ipRoute(sans: { dns?: string[]; ips?: string[] }) {
  const pki = await createPki();
  const leaf = await pki.issue({ cn: "mx.example.test", ...sans });
  const down = await startTestFerry({ tls: ferryTls(leaf) });
  const up = await startFerryIn({
    routes: [{ domains: "*", hosts: [`127.0.0.1:${down.port}`] }],
    delivery: { enable: true, tlsVerifyCertificates: pki.certFile, tlsVerifyHosts: "*" },
  }, { resolver: resolver() });
  return {
    up,
    down,
    async cleanup() {
      await up.dispose();
      await down.stop();
      await Deno.remove(down.dir, { recursive: true }).catch(() => {});
      await pki.cleanup();
    },
  };
}

Deno.test("an IP-literal route host with tlsVerifyHosts: a certificate for a name only does not verify", async () => {
  const rig = await ipRoute({ dns: ["mx.example.test"] });
  try {
    await submit(rig.up.port, ["user@example.test"]);
    await waitFor(() => linesOf(rig.up.memlog, "==").length > 0, 8000, "a deferral");
    assert.match(
      linesOf(rig.up.memlog, "==")[0],
      / H=127\.0\.0\.1 \[127\.0\.0\.1\]:\d+ TLS=pkix: tlsVerifyHosts: certificate verification failed: certificate does not match 127\.0\.0\.1/,
    );
    assert.equal(await rig.down.spool.count(), 0);
  } finally {
    await rig.cleanup();
  }
});

Deno.test("an IP-literal route host with tlsVerifyHosts: a certificate with the IP SAN verifies (CV=yes)", async () => {
  const rig = await ipRoute({ dns: ["mx.example.test"], ips: ["127.0.0.1"] });
  try {
    await submit(rig.up.port, ["user@example.test"]);
    await waitFor(() => linesOf(rig.up.memlog, "=>").length > 0, 8000, "a delivery");
    assert.match(
      linesOf(rig.up.memlog, "=>")[0],
      / H=127\.0\.0\.1 \[127\.0\.0\.1\]:\d+ X=\S+ CV=yes TLS=pkix /,
    );
  } finally {
    await rig.cleanup();
  }
});
