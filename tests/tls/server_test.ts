import assert from "node:assert/strict";
import { tlsAccept, TlsServerContext } from "../../src/tls/server_context.ts";
import { TlsConfigError, TlsError } from "../../src/tls/errors.ts";
import { createPki, type Issued, type TestPki } from "../helpers/pki.ts";
import { echoServer, nth, sClient } from "./_peers.ts";
import { loadOpenSsl } from "../../src/tls/mod.ts";

loadOpenSsl();

interface Fixture {
  pki: TestPki;
  ec: Issued;
  rsa: Issued;
  mx: Issued;
  wild: Issued;
  client: Issued;
}

let shared: Promise<Fixture> | undefined;
function fixture(): Promise<Fixture> {
  shared ??= (async () => {
    const pki = await createPki();
    const [ec, rsa, mx, wild, client] = await Promise.all([
      pki.issue({ cn: "default-ec.test", dns: ["default.test"] }),
      pki.issue({ cn: "default-rsa.test", dns: ["default.test"], keyType: "rsa" }),
      pki.issue({ cn: "mx.example.com", dns: ["mx.example.com"] }),
      pki.issue({ cn: "wild.example.net", dns: ["*.example.net"] }),
      pki.issue({ cn: "client.test" }),
    ]);
    return { pki, ec, rsa, mx, wild, client };
  })();
  return shared;
}

// Every test in this file shares one PKI, removed in teardown (also when tests are filtered or fail).
Deno.test.afterAll(async () => {
  if (shared) await (await shared).pki.cleanup();
});
const t = (name: string, fn: (f: Fixture) => Promise<void>) =>
  Deno.test({ name, fn: async () => fn(await fixture()), sanitizeResources: true, sanitizeOps: true });

t("tlsAccept() completes a TLS 1.3 handshake with openssl s_client and carries data both ways", async (f) => {
  const ctx = new TlsServerContext({ certificates: [{ certFile: f.ec.chainFile, keyFile: f.ec.keyFile }] });
  const srv = echoServer(ctx);
  try {
    const r = await sClient(srv.port, ["-brief", "-CAfile", f.pki.certFile, "-servername", "default.test"]);
    assert.match(r.stdout, /^echo ping sni=default\.test peer=undefined verified=undefined$/m);
    assert.match(r.stderr, /Protocol version: TLSv1\.3/);
    assert.match(r.stderr, /Verification: OK/);
    const a = await nth(srv, 0);
    assert.equal(a.error, undefined);
    assert.equal(a.stream?.info.version, "TLS1.3");
    assert.ok(a.stream!.info.bits >= 128);
    assert.match(a.stream!.info.cipher, /^TLS_/);
  } finally {
    await srv.close();
    ctx.close();
  }
});

t("SNI picks the certificate set by exact name, by wildcard, and falls back to the default", async (f) => {
  const ctx = new TlsServerContext({
    certificates: [
      { certFile: f.mx.chainFile, keyFile: f.mx.keyFile, serverNames: ["MX.example.com."] },
      { certFile: f.ec.chainFile, keyFile: f.ec.keyFile },
      { certFile: f.wild.chainFile, keyFile: f.wild.keyFile, serverNames: ["*.example.net"] },
    ],
  });
  const srv = echoServer(ctx);
  try {
    const peer = async (args: string[]) =>
      (await sClient(srv.port, ["-brief", ...args])).stderr.match(/Peer certificate: CN = (\S+)/)?.[1];
    assert.equal(await peer(["-servername", "mx.example.com"]), "mx.example.com");
    assert.equal(await peer(["-servername", "a.example.net"]), "wild.example.net");
    assert.equal(await peer(["-servername", "a.b.example.net"]), "default-ec.test");
    assert.equal(await peer(["-servername", "other.test"]), "default-ec.test");
    assert.equal(await peer(["-noservername"]), "default-ec.test");
  } finally {
    await srv.close();
    ctx.close();
  }
});

t("RSA and ECDSA certificates side by side: OpenSSL picks the one the client can verify", async (f) => {
  const ctx = new TlsServerContext({
    certificates: [
      { certFile: f.rsa.chainFile, keyFile: f.rsa.keyFile },
      { certFile: f.ec.chainFile, keyFile: f.ec.keyFile },
    ],
  });
  const srv = echoServer(ctx);
  try {
    const rsa = await sClient(srv.port, ["-brief", "-sigalgs", "rsa_pss_rsae_sha256"]);
    assert.match(rsa.stderr, /Peer certificate: CN = default-rsa\.test/);
    const ec = await sClient(srv.port, ["-brief", "-sigalgs", "ecdsa_secp256r1_sha256"]);
    assert.match(ec.stderr, /Peer certificate: CN = default-ec\.test/);
    const tls12 = await sClient(srv.port, ["-brief", "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]);
    assert.match(tls12.stderr, /Protocol version: TLSv1\.2/);
    assert.match(tls12.stderr, /Peer certificate: CN = default-rsa\.test/);
  } finally {
    await srv.close();
    ctx.close();
  }
});

t(
  "OCSP stapling: the chosen set's provider is asked per handshake and its response reaches s_client",
  async (f) => {
    const good = await f.pki.ocspResponse(f.ec.certFile);
    let ecCalls = 0, rsaCalls = 0;
    const ctx = new TlsServerContext({
      certificates: [
        { certFile: f.ec.chainFile, keyFile: f.ec.keyFile, ocsp: () => (ecCalls++, good) },
        { certFile: f.rsa.chainFile, keyFile: f.rsa.keyFile, ocsp: () => (rsaCalls++, undefined) },
      ],
    });
    const srv = echoServer(ctx);
    try {
      const r = await sClient(srv.port, ["-status", "-sigalgs", "ecdsa_secp256r1_sha256"]);
      assert.match(r.stdout, /OCSP Response Status: successful/);
      assert.match(r.stdout, /Cert Status: good/);
      assert.equal(ecCalls, 1);
      const none = await sClient(srv.port, ["-status", "-sigalgs", "rsa_pss_rsae_sha256"]);
      assert.match(none.all, /OCSP response: no response sent/);
      assert.equal(rsaCalls, 1);
      await sClient(srv.port, ["-sigalgs", "ecdsa_secp256r1_sha256"]);
      assert.equal(ecCalls, 1, "no stapling work when the client did not ask");
    } finally {
      await srv.close();
      ctx.close();
    }
  },
);

t("protocol range: a TLS 1.3-only server refuses a TLS 1.2 client and keeps serving", async (f) => {
  const ctx = new TlsServerContext({
    certificates: [{ certFile: f.ec.chainFile, keyFile: f.ec.keyFile }],
    minVersion: "TLS1.3",
  });
  const srv = echoServer(ctx);
  try {
    const old = await sClient(srv.port, ["-brief", "-tls1_2"]);
    assert.doesNotMatch(old.stdout, /echo ping/);
    const a = await nth(srv, 0);
    assert.ok(a.error instanceof TlsError);
    assert.match(String((a.error as TlsError).reason), /protocol/i);
    const ok = await sClient(srv.port, ["-brief"]);
    assert.match(ok.stdout, /echo ping/);
  } finally {
    await srv.close();
    ctx.close();
  }
});

t("TLS 1.2 only with a chosen cipher list and groups", async (f) => {
  const ctx = new TlsServerContext({
    certificates: [{ certFile: f.ec.chainFile, keyFile: f.ec.keyFile }],
    maxVersion: "TLS1.2",
    ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384",
    groups: "P-256",
  });
  const srv = echoServer(ctx);
  try {
    const r = await sClient(srv.port, ["-brief"]);
    assert.match(r.stderr, /Protocol version: TLSv1\.2/);
    assert.match(r.stderr, /Ciphersuite: ECDHE-ECDSA-AES256-GCM-SHA384/);
    assert.match(r.stderr, /Server Temp Key: ECDH, prime256v1/);
    const a = await nth(srv, 0);
    assert.equal(a.stream?.info.version, "TLS1.2");
    assert.equal(a.stream?.info.bits, 256);
  } finally {
    await srv.close();
    ctx.close();
  }
});

t("client certificates: verified subject exposed; an untrusted one is recorded as unverified", async (f) => {
  const other = await f.pki.newRoot("Other Root");
  const stranger = await other.issue({ cn: "stranger.test" });
  const ctx = new TlsServerContext({
    certificates: [{ certFile: f.ec.chainFile, keyFile: f.ec.keyFile }],
    clientCertificates: { caFile: f.pki.certFile },
  });
  const srv = echoServer(ctx);
  try {
    const ok = await sClient(srv.port, ["-brief", "-cert", f.client.certFile, "-key", f.client.keyFile]);
    assert.match(ok.stdout, /peer=\/CN=client\.test verified=true/);
    const a = await nth(srv, 0);
    assert.equal(a.stream?.peerCertificates.length, 1);
    const bad = await sClient(srv.port, ["-brief", "-cert", stranger.certFile, "-key", stranger.keyFile]);
    assert.match(bad.stdout, /peer=\/CN=stranger\.test verified=false/);
    const none = await sClient(srv.port, ["-brief"]);
    assert.match(none.stdout, /peer=undefined verified=undefined/);
  } finally {
    await srv.close();
    ctx.close();
  }
});

t("client certificates required: a client without one fails the handshake", async (f) => {
  const ctx = new TlsServerContext({
    certificates: [{ certFile: f.ec.chainFile, keyFile: f.ec.keyFile }],
    clientCertificates: { caFile: f.pki.certFile, require: true },
  });
  const srv = echoServer(ctx);
  try {
    const r = await sClient(srv.port, ["-brief"]);
    assert.doesNotMatch(r.stdout, /echo ping/);
    const a = await nth(srv, 0);
    assert.ok(a.error instanceof TlsError);
    assert.match((a.error as Error).message, /certificate/i);
  } finally {
    await srv.close();
    ctx.close();
  }
});

t("STARTTLS: the handshake starts on a connection that already spoke plaintext SMTP", async (f) => {
  const ctx = new TlsServerContext({ certificates: [{ certFile: f.ec.chainFile, keyFile: f.ec.keyFile }] });
  const enc = new TextEncoder(), dec = new TextDecoder();
  const seen: string[] = [];
  const srv = echoServer(ctx, {}, async (conn) => {
    const buf = new Uint8Array(512);
    const say = (s: string) => conn.write(enc.encode(s));
    const hear = async () => {
      const n = await conn.read(buf);
      const s = dec.decode(buf.subarray(0, n ?? 0));
      seen.push(s.trim());
      return s;
    };
    await say("220 ferry.test ESMTP\r\n");
    await hear();
    await say("250-ferry.test\r\n250 STARTTLS\r\n");
    await hear();
    await say("220 2.0.0 Ready to start TLS\r\n");
    // Read the first five handshake bytes here and hand them over as `initial`.
    const head = new Uint8Array(5);
    let got = 0;
    while (got < 5) got += (await conn.read(head.subarray(got))) ?? 5;
    return head;
  });
  try {
    const r = await sClient(srv.port, ["-starttls", "smtp", "-brief", "-CAfile", f.pki.certFile]);
    assert.match(r.stdout, /echo ping/);
    assert.match(r.stderr, /Verification: OK/);
    assert.match(seen[0], /^EHLO /);
    assert.equal(seen[1], "STARTTLS");
  } finally {
    await srv.close();
    ctx.close();
  }
});

t("garbage instead of a ClientHello fails only that connection; the next client is served", async (f) => {
  const ctx = new TlsServerContext({ certificates: [{ certFile: f.ec.chainFile, keyFile: f.ec.keyFile }] });
  const srv = echoServer(ctx);
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: srv.port });
    await c.write(new TextEncoder().encode("EHLO garbage.example\r\nMAIL FROM:<a@b>\r\n"));
    const a = await nth(srv, 0);
    assert.ok(a.error instanceof TlsError, String(a.error));
    assert.match((a.error as TlsError).message, /handshake failed/);
    // Server closed the connection after (at most) an alert.
    const buf = new Uint8Array(64);
    let n: number | null = 0;
    while (n !== null) n = await c.read(buf).catch(() => null);
    c.close();
    const ok = await sClient(srv.port, ["-brief"]);
    assert.match(ok.stdout, /echo ping/);
  } finally {
    await srv.close();
    ctx.close();
  }
});

t("a client that stalls in the handshake gets a timeout TlsError and its connection closed", async (f) => {
  const ctx = new TlsServerContext({ certificates: [{ certFile: f.ec.chainFile, keyFile: f.ec.keyFile }] });
  const srv = echoServer(ctx, { timeout: 300 });
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: srv.port });
    const started = Date.now();
    const a = await nth(srv, 0);
    assert.ok(a.error instanceof TlsError);
    assert.match((a.error as Error).message, /timed out after 300 ms/);
    assert.ok(Date.now() - started < 3000);
    assert.equal(await c.read(new Uint8Array(8)).catch(() => null), null);
    c.close();
  } finally {
    await srv.close();
    ctx.close();
  }
});

t("a peer that closes mid-handshake gives a TlsError naming that", async (f) => {
  const ctx = new TlsServerContext({ certificates: [{ certFile: f.ec.chainFile, keyFile: f.ec.keyFile }] });
  const srv = echoServer(ctx);
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port: srv.port });
    // A handshake record header promising 512 bytes, then a few of them, then FIN.
    await c.write(new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]));
    c.close();
    const a = await nth(srv, 0);
    assert.ok(a.error instanceof TlsError);
    assert.match((a.error as Error).message, /Peer closed the connection during the TLS handshake/);
  } finally {
    await srv.close();
    ctx.close();
  }
});

t("an AbortSignal stops a handshake in progress", async (f) => {
  const ctx = new TlsServerContext({ certificates: [{ certFile: f.ec.chainFile, keyFile: f.ec.keyFile }] });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const c = await Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port });
  const s = await listener.accept();
  try {
    const ac = new AbortController();
    const p = tlsAccept(s, ctx, { signal: ac.signal });
    setTimeout(() => ac.abort(new Error("shutting down")), 50);
    await assert.rejects(p, (e: unknown) => e instanceof TlsError && /aborted/.test(e.message));
  } finally {
    c.close();
    listener.close();
    ctx.close();
  }
});

t("a missing key file is a TlsConfigError naming the file", async (f) => {
  const missing = `${f.pki.dir}/nope.key`;
  assert.throws(
    () => new TlsServerContext({ certificates: [{ certFile: f.ec.chainFile, keyFile: missing }] }),
    (e: unknown) => e instanceof TlsConfigError && e.file === missing && e.message.includes(`"${missing}"`),
  );
  const missingCert = `${f.pki.dir}/nope.crt`;
  assert.throws(
    () => new TlsServerContext({ certificates: [{ certFile: missingCert, keyFile: f.ec.keyFile }] }),
    (e: unknown) => e instanceof TlsConfigError && e.file === missingCert,
  );
  await Promise.resolve();
});

t("a key that does not match its certificate, or a non-PEM file, is a TlsConfigError", async (f) => {
  assert.throws(
    () => new TlsServerContext({ certificates: [{ certFile: f.ec.chainFile, keyFile: f.mx.keyFile }] }),
    (e: unknown) =>
      e instanceof TlsConfigError && e.file === f.mx.keyFile && /does not match/.test(e.message),
  );
  const junk = `${f.pki.dir}/junk.pem`;
  await Deno.writeTextFile(junk, "not a certificate\n");
  assert.throws(
    () => new TlsServerContext({ certificates: [{ certFile: junk, keyFile: f.ec.keyFile }] }),
    (e: unknown) =>
      e instanceof TlsConfigError && e.file === junk && /Cannot load certificate/.test(e.message),
  );
  assert.throws(
    () =>
      new TlsServerContext({
        certificates: [{ certFile: f.ec.chainFile, keyFile: f.ec.keyFile }],
        ciphers: "NOPE",
      }),
    (e: unknown) => e instanceof TlsConfigError && /cipher list/.test(e.message),
  );
});
