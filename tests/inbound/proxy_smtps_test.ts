/**
 * An smtps listener behind a PROXY-protocol proxy (a coalescing relay, and a real HAProxy): when the proxy sends its header and the client's TLS
 * ClientHello in one segment (a proxy that had the ClientHello buffered before its backend connection was up),
 * the bytes read past the header open the TLS handshake. They used to be handed to the SMTP session instead,
 * and the handshake waited for a ClientHello that had already come, until tls.handshakeTimeout.
 */

import assert from "node:assert/strict";
import { startTestFerry } from "../helpers/ferry.ts";
import { createPki, ferryTls } from "../helpers/pki.ts";
import { loadOpenSsl } from "../../src/tls/mod.ts";
import { spawnHaproxy } from "../helpers/haproxy.ts";
import { freePort } from "../helpers/process.ts";

loadOpenSsl();

const enc = new TextEncoder();
const dec = new TextDecoder();

/**
 * A one-connection proxy on loopback: waits for the client's first bytes (its ClientHello), writes the PROXY
 * header and those bytes to `target` in one write, then relays both ways.
 */
function coalescingProxy(target: number, header: string): { port: number; done: Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const done = (async () => {
    const client = await listener.accept();
    listener.close();
    const upstream = await Deno.connect({ hostname: "127.0.0.1", port: target });
    try {
      const first = new Uint8Array(16384);
      const n = await client.read(first);
      if (n === null) return;
      const h = enc.encode(header);
      const both = new Uint8Array(h.length + n);
      both.set(h);
      both.set(first.subarray(0, n), h.length);
      await upstream.write(both);
      await Promise.allSettled([
        client.readable.pipeTo(upstream.writable),
        upstream.readable.pipeTo(client.writable),
      ]);
    } finally {
      for (const c of [client, upstream]) {
        try {
          c.close();
        } catch { /* closed by pipeTo */ }
      }
    }
  })();
  return { port: (listener.addr as Deno.NetAddr).port, done };
}

Deno.test("smtps behind PROXY: a ClientHello in the same segment as the header starts the handshake", async () => {
  const pki = await createPki();
  const leaf = await pki.issue({ cn: "ferry.test", dns: ["ferry.test"] });
  const f = await startTestFerry({
    listen: [{ address: "127.0.0.1", port: 0 }, { address: "127.0.0.1", port: 0, mode: "smtps" }],
    tls: { ...ferryTls(leaf), handshakeTimeout: "20s" },
    proxyRequiredHosts: ["127.0.0.1"],
    proxyTimeout: "5s",
  });
  try {
    const smtps = f.addresses[1].port;
    const proxy = coalescingProxy(smtps, "PROXY TCP4 192.0.2.7 192.0.2.1 40000 465\r\n");
    const tcp = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    const tls = await Deno.startTls(tcp, {
      hostname: "ferry.test",
      caCerts: [await Deno.readTextFile(pki.certFile)],
    });
    let got = "";
    const buf = new Uint8Array(4096);
    const line = async () => {
      while (!/\r\n$/.test(got)) {
        const n = await tls.read(buf);
        if (n === null) break;
        got += dec.decode(buf.subarray(0, n));
      }
      const l = got;
      got = "";
      return l;
    };
    assert.match(await line(), /^220 ferry\.test /);
    await tls.write(enc.encode("EHLO client.test\r\n"));
    assert.match(await line(), /^250-ferry\.test Hello client\.test \[192\.0\.2\.7\]/);
    await tls.write(enc.encode("QUIT\r\n"));
    await line();
    tls.close();
    await proxy.done;
    assert.ok(!f.memlog.lines.some((l) => /TLS error/.test(l.text)), JSON.stringify(f.memlog.lines));
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
    await pki.cleanup();
  }
});

Deno.test("smtps behind a real HAProxy (send-proxy-v2): every TLS client gets the banner", async () => {
  // HAProxy forwards the ClientHello it already holds right behind the header: before the fix most of
  // these handshakes (14 of 20 in one run) hung until tls.handshakeTimeout.
  const pki = await createPki();
  const leaf = await pki.issue({ cn: "ferry.test", dns: ["ferry.test"], ips: ["127.0.0.1"] });
  const f = await startTestFerry({
    listen: [{ address: "127.0.0.1", port: 0 }, { address: "127.0.0.1", port: 0, mode: "smtps" }],
    tls: { ...ferryTls(leaf), handshakeTimeout: "20s" },
    proxyRequiredHosts: ["127.0.0.1"],
    proxyTimeout: "5s",
  });
  const dir = await Deno.makeTempDir({ prefix: "ferry-haproxy-" });
  const front = freePort();
  const haproxy = await spawnHaproxy(dir, [
    "frontend smtps",
    `  bind 127.0.0.1:${front}`,
    "  default_backend ferry",
    "backend ferry",
    `  server ferry 127.0.0.1:${f.addresses[1].port} send-proxy-v2`,
  ]);
  try {
    const caCerts = [await Deno.readTextFile(pki.certFile)];
    const banners: string[] = [];
    for (let i = 0; i < 10; i++) {
      let tls: Deno.TlsConn | undefined;
      for (let tries = 0; !tls; tries++) {
        try {
          tls = await Deno.connectTls({ hostname: "127.0.0.1", port: front, caCerts });
        } catch (err) {
          // HAProxy may still be binding its frontend.
          if (!(err instanceof Deno.errors.ConnectionRefused) || tries > 100) throw err;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      try {
        await tls.handshake();
        const buf = new Uint8Array(512);
        const n = await tls.read(buf);
        banners.push(dec.decode(buf.subarray(0, n ?? 0)));
      } finally {
        tls.close();
      }
    }
    assert.equal(banners.filter((b) => /^220 ferry\.test /.test(b)).length, 10, JSON.stringify(banners));
    assert.ok(!f.memlog.lines.some((l) => /TLS error/.test(l.text)), JSON.stringify(f.memlog.lines));
  } finally {
    await haproxy.stop();
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await pki.cleanup();
  }
});
