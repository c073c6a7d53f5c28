/** A STARTTLS handshake that fails where TLS is optional is retried in clear (Exim's tls_tempfail_tryclear). */
import assert from "node:assert/strict";
import { loadOpenSsl } from "../../src/tls/mod.ts";
import { linesOf, startFerryIn, submit, waitFor } from "../helpers/downstream.ts";

loadOpenSsl();

/** A peer that offers STARTTLS, then answers the ClientHello with garbage; in clear it takes mail. */
function brokenTlsPeer(): { port: number; received: string[]; startTlsTries: () => number; stop(): void } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const received: string[] = [];
  let tries = 0;
  const enc = new TextEncoder();
  const serve = async (conn: Deno.Conn) => {
    const say = (s: string) => conn.write(enc.encode(s + "\r\n"));
    const dec = new TextDecoder();
    let buf = "";
    let inData = false;
    let body = "";
    try {
      await say("220 broken.test ESMTP");
      const chunk = new Uint8Array(65536);
      for (;;) {
        const n = await conn.read(chunk);
        if (n === null) return;
        buf += dec.decode(chunk.subarray(0, n));
        let nl;
        while ((nl = buf.indexOf("\r\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 2);
          if (inData) {
            if (line === ".") {
              inData = false;
              received.push(body);
              await say("250 2.0.0 taken");
            } else body += line + "\n";
            continue;
          }
          const verb = line.slice(0, 4).toUpperCase();
          if (verb === "EHLO") await say("250-broken.test\r\n250-PIPELINING\r\n250 STARTTLS");
          else if (verb === "STAR") {
            tries++;
            await say("220 2.0.0 go ahead");
            await conn.read(chunk); // the ClientHello
            await conn.write(enc.encode("this is not a TLS record at all\r\n"));
            conn.close();
            return;
          } else if (verb === "DATA") {
            inData = true;
            body = "";
            await say("354 go");
          } else if (verb === "QUIT") {
            await say("221 bye");
            conn.close();
            return;
          } else await say("250 ok");
        }
      }
    } catch { /* peer gone */ }
  };
  (async () => {
    for await (const c of listener) serve(c);
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    received,
    startTlsTries: () => tries,
    stop: () => listener.close(),
  };
}

Deno.test("a failed optional STARTTLS handshake is retried in clear on the same host and delivers", async () => {
  const peer = brokenTlsPeer();
  const f = await startFerryIn({
    relay: { domains: [], clients: ["127.0.0.0/8"] },
    routes: [{ domains: "*", hosts: [`127.0.0.1:${peer.port}`] }],
    delivery: { enable: true, hostRetryBase: "50ms" },
    dns: { nameservers: [{ address: "127.0.0.1", port: 9 }] },
  });
  try {
    await submit(f.port, ["user@example.test"]);
    await waitFor(() => linesOf(f.memlog, "=>").length === 1, 10_000, "delivery in clear");
    assert.equal(peer.startTlsTries(), 1);
    assert.equal(peer.received.length, 1);
    assert.ok(f.memlog.has(/TLS session failed/), "the failed handshake is logged");
    assert.doesNotMatch(linesOf(f.memlog, "=>")[0], / X=/, "delivered without TLS");
  } finally {
    await f.dispose();
    peer.stop();
  }
});

Deno.test("with hostsRequireTls the same failure defers instead of falling back", async () => {
  const peer = brokenTlsPeer();
  const f = await startFerryIn({
    relay: { domains: [], clients: ["127.0.0.0/8"] },
    routes: [{ domains: "*", hosts: [`127.0.0.1:${peer.port}`], hostsRequireTls: "*" }],
    delivery: { enable: true },
    dns: { nameservers: [{ address: "127.0.0.1", port: 9 }] },
  });
  try {
    await submit(f.port, ["user@example.test"]);
    await waitFor(() => linesOf(f.memlog, "==").length === 1, 10_000, "deferral");
    assert.equal(peer.received.length, 0);
    assert.equal(linesOf(f.memlog, "=>").length, 0);
  } finally {
    await f.dispose();
    peer.stop();
  }
});
