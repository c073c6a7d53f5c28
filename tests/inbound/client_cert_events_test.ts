/**
 * `tls:cert` fires for inbound client certificates too (Exim: "before both" directions' verification):
 * swaks presents a certificate from the test CA over STARTTLS; a veto, or a failing handler, makes the client
 * certificate unverified for policy (`c.tls.peerVerified`).
 */

import assert from "node:assert/strict";
import type { EventHandlers } from "../../mod.ts";
import { loadOpenSsl } from "../../src/tls/mod.ts";
import { startTestFerry } from "../helpers/ferry.ts";
import { createPki, ferryTls, type Issued, type TestPki } from "../helpers/pki.ts";
import { runSwaks } from "../helpers/peers.ts";

loadOpenSsl();

interface Seen {
  certs: { event: string; direction: string; depth: number; certificate: Uint8Array; address: string }[];
  verified: (boolean | undefined)[];
}

async function deliverWithClientCert(
  pki: TestPki,
  client: Issued,
  events: (seen: Seen) => EventHandlers,
): Promise<{ seen: Seen; log: string[] }> {
  const server = await pki.issue({ cn: "ferry.test", dns: ["ferry.test"] });
  const seen: Seen = { certs: [], verified: [] };
  const f = await startTestFerry({
    tls: {
      ...ferryTls(server),
      requestClientCert: true,
      clientCa: pki.certFile,
    },
    limits: { eventTimeout: "300ms" },
    events: events(seen),
    policy: {
      mail: [async (c, next) => {
        seen.verified.push(c.tls?.peerVerified);
        await next();
      }],
    },
  });
  try {
    const r = await runSwaks(f.port, [
      "--tls",
      "--tls-cert",
      client.certFile,
      "--tls-key",
      client.keyFile,
      "--to",
      "u@example.test",
      "--from",
      "s@x.test",
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    return { seen, log: f.memlog.lines.map((l) => l.text) };
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
}

Deno.test("tls:cert fires for an inbound client certificate (direction inbound, leaf at depth 0); no veto → verified", async () => {
  const pki = await createPki();
  try {
    const client = await pki.issue({ cn: "client.example.test" });
    const { seen } = await deliverWithClientCert(pki, client, (seen) => ({
      "tls:cert": (e) => void seen.certs.push(e),
    }));
    assert.ok(seen.certs.length >= 1);
    assert.equal(seen.certs[0].event, "tls:cert");
    assert.equal(seen.certs[0].direction, "inbound");
    assert.equal(seen.certs[0].depth, 0);
    assert.equal(seen.certs[0].address, "127.0.0.1");
    assert.deepEqual(seen.certs[0].certificate, client.der);
    assert.deepEqual(seen.verified, [true]);
  } finally {
    await pki.cleanup();
  }
});

Deno.test("a tls:cert veto or failing handler makes an inbound client certificate unverified, logged", async () => {
  const pki = await createPki();
  try {
    const client = await pki.issue({ cn: "client.example.test" });
    const vetoed = await deliverWithClientCert(pki, client, () => ({
      "tls:cert": (e) => e.direction === "inbound" ? "not pinned" : undefined,
    }));
    assert.deepEqual(vetoed.seen.verified, [false]);
    assert.ok(
      vetoed.log.some((l) =>
        /^TLS client certificate of \[127\.0\.0\.1\]:\d+ refused by tls:cert at depth 0: not pinned$/.test(l)
      ),
      vetoed.log.join("\n"),
    );
    const hung = await deliverWithClientCert(pki, client, () => ({ "tls": () => new Promise(() => {}) }));
    assert.deepEqual(hung.seen.verified, [false]);
    assert.ok(hung.log.some((l) => /^event tls:cert: handler .* failed: .* \(counts as a veto\)$/.test(l)));
  } finally {
    await pki.cleanup();
  }
});
