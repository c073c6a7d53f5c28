import assert from "node:assert/strict";
import { TlsClientContext, tlsConnect, type TlsConnectOptions } from "../../src/tls/client.ts";
import { loadOpenSsl, tlsAccept, TlsError, TlsServerContext, type TlsStream } from "../../src/tls/mod.ts";
import {
  caDate,
  createPki,
  type Issued,
  issueIntermediate,
  type TestCa,
  type TestPki,
} from "../helpers/pki.ts";
import { sServer } from "./_peers.ts";

loadOpenSsl();

interface Fixture {
  pki: TestPki;
  other: TestCa;
  mx: Issued;
  wild: Issued;
  cnOnly: Issued;
  expired: Issued;
  future: Issued;
  inter: TestCa & Issued;
  deep: Issued;
  ctx: TlsClientContext;
  wrongCtx: TlsClientContext;
}

let shared: Promise<Fixture> | undefined;
function fixture(): Promise<Fixture> {
  shared ??= (async () => {
    const pki = await createPki();
    const now = Date.now(), day = 86400_000;
    const other = await pki.newRoot("Other Root");
    const inter = await issueIntermediate(pki, "Ferry Intermediate");
    const [mx, wild, cnOnly, expired, future, deep] = await Promise.all([
      pki.issue({ cn: "mx.example.com", dns: ["mx.example.com", "mx2.example.com"] }),
      pki.issue({ cn: "wild", dns: ["*.example.net"] }),
      pki.issue({ cn: "cn-only.example.org" }),
      pki.issue({
        cn: "expired.example",
        dns: ["expired.example"],
        startDate: caDate(new Date(now - 10 * day)),
        endDate: caDate(new Date(now - day)),
      }),
      pki.issue({
        cn: "future.example",
        dns: ["future.example"],
        startDate: caDate(new Date(now + day)),
        endDate: caDate(new Date(now + 10 * day)),
      }),
      inter.issue({ cn: "deep.example", dns: ["deep.example"] }),
    ]);
    const ctx = new TlsClientContext({ caFile: pki.certFile });
    const wrongCtx = new TlsClientContext({ caFile: other.certFile });
    return { pki, other, mx, wild, cnOnly, expired, future, inter, deep, ctx, wrongCtx };
  })();
  return shared;
}

// Every test in this file shares one PKI and two contexts, released in teardown (also when tests are filtered or fail).
Deno.test.afterAll(async () => {
  if (!shared) return;
  const f = await shared;
  f.ctx.close();
  f.wrongCtx.close();
  await f.pki.cleanup();
});

const t = (name: string, fn: (f: Fixture) => Promise<void>) =>
  Deno.test({ name, fn: async () => fn(await fixture()) });

/** Starts s_server with `cert`, connects with tlsConnect, hands the stream to `body`, cleans up. */
async function withServer(
  cert: Issued,
  opts: TlsConnectOptions,
  body: (s: TlsStream) => unknown,
  extra: string[] = [],
): Promise<void> {
  const srv = await sServer(["-cert", cert.chainFile, "-key", cert.keyFile, "-rev", ...extra]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: srv.port });
  let stream: TlsStream | undefined;
  try {
    stream = await tlsConnect(conn, opts);
    await body(stream);
  } finally {
    stream?.close();
    await stream?.closed;
    try {
      conn.close();
    } catch { /* closed by the stream */ }
    await srv.stop();
  }
}

/** Expects tlsConnect against `cert` to throw a TlsError matching `re`. */
async function rejects(
  cert: Issued,
  opts: TlsConnectOptions,
  re: RegExp,
  extra: string[] = [],
): Promise<void> {
  const srv = await sServer(["-cert", cert.chainFile, "-key", cert.keyFile, ...extra]);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: srv.port });
  try {
    await assert.rejects(tlsConnect(conn, opts), (e: unknown) => e instanceof TlsError && re.test(e.message));
  } finally {
    try {
      conn.close();
    } catch { /* closed by tlsConnect */ }
    await srv.stop();
  }
}

t("tlsConnect() verifies openssl s_server's chain and name, and carries data", async (f) => {
  await withServer(f.mx, { context: f.ctx, serverName: "mx.example.com" }, async (s) => {
    assert.deepEqual(s.verification, {
      verified: true,
      nameChecked: true,
      nameMatched: true,
      method: "pkix",
    });
    assert.equal(s.info.version, "TLS1.3");
    assert.equal(s.info.sni, "mx.example.com");
    assert.equal(s.info.peerSubject, "/CN=mx.example.com");
    assert.equal(s.info.peerVerified, true);
    assert.equal(s.peerCertificates.length, 1);
    assert.deepEqual(s.peerCertificates[0], f.mx.der);
    await s.write(new TextEncoder().encode("hello\n"));
    const buf = new Uint8Array(64);
    let got = "";
    while (!got.includes("\n")) {
      const n = await s.read(buf);
      if (n === null) break;
      got += new TextDecoder().decode(buf.subarray(0, n));
    }
    assert.equal(got.trim(), "olleh");
  });
});

t(
  "a server from an untrusted CA: recorded as unverified, or rejected when verification is required",
  async (f) => {
    await withServer(
      f.mx,
      { context: f.wrongCtx, serverName: "mx.example.com", verify: "record" },
      (s) => {
        assert.equal(s.verification?.verified, false);
        assert.match(s.verification?.verifyError ?? "", /unable to verify the first certificate/);
        assert.equal(s.verification?.nameMatched, true);
        assert.equal(s.info.peerVerified, false);
      },
    );
    await rejects(f.mx, { context: f.wrongCtx, serverName: "mx.example.com" }, /unable to verify/);
  },
);

t("the RFC 6125 name check: SAN list, mismatch, CN fallback, explicit acceptable names", async (f) => {
  const record = { context: f.ctx, verify: "record" as const };
  await withServer(f.mx, { ...record, names: ["MX2.Example.COM."] }, (s) => {
    assert.equal(s.verification?.nameMatched, true);
  });
  await withServer(f.mx, { ...record, serverName: "other.example.com" }, (s) => {
    assert.equal(s.verification?.verified, true);
    assert.equal(s.verification?.nameChecked, true);
    assert.equal(s.verification?.nameMatched, false);
    assert.equal(s.info.peerVerified, false);
  });
  await withServer(f.cnOnly, { ...record, names: ["cn-only.example.org"] }, (s) => {
    assert.equal(s.verification?.nameMatched, true);
  });
  await withServer(f.mx, { ...record, names: [], serverName: "x.test" }, (s) => {
    assert.equal(s.verification?.nameChecked, false);
  });
  await rejects(f.mx, { context: f.ctx, serverName: "other.example.com" }, /server name does not match/);
});

t("wildcard certificates match exactly one left-most label", async (f) => {
  const record = { context: f.ctx, verify: "record" as const };
  await withServer(f.wild, { ...record, names: ["mx.example.net"] }, (s) => {
    assert.equal(s.verification?.nameMatched, true);
  });
  await withServer(f.wild, { ...record, names: ["a.b.example.net", "example.net"] }, (s) => {
    assert.equal(s.verification?.nameMatched, false);
  });
});

t("onCert sees every received certificate with its depth and can veto", async (f) => {
  const seen: [number, number][] = [];
  await withServer(f.deep, {
    context: f.ctx,
    serverName: "deep.example",
    onCert: (depth, der) => void seen.push([depth, der.length]),
  }, (s) => {
    assert.equal(s.verification?.verified, true);
    assert.equal(s.peerCertificates.length, 2);
    assert.deepEqual(s.peerCertificates[1], f.inter.der);
  }, ["-cert_chain", f.inter.certFile]);
  assert.deepEqual(seen.map(([d]) => d), [0, 1]);
  await withServer(f.deep, {
    context: f.ctx,
    serverName: "deep.example",
    verify: "record",
    onCert: (depth) => depth === 1 ? "intermediate not allowed here" : undefined,
  }, (s) => {
    assert.equal(s.verification?.verified, false);
    assert.equal(s.verification?.verifyError, "intermediate not allowed here");
  }, ["-cert_chain", f.inter.certFile]);
  await rejects(f.deep, { context: f.ctx, serverName: "deep.example", onCert: () => "vetoed" }, /vetoed/, [
    "-cert_chain",
    f.inter.certFile,
  ]);
});

t("expired and not-yet-valid server certificates are unverified with OpenSSL's reason", async (f) => {
  await withServer(
    f.expired,
    { context: f.ctx, serverName: "expired.example", verify: "record" },
    (s) => {
      assert.equal(s.verification?.verified, false);
      assert.equal(s.verification?.verifyError, "certificate has expired");
    },
  );
  await withServer(
    f.future,
    { context: f.ctx, serverName: "future.example", verify: "record" },
    (s) => {
      assert.equal(s.verification?.verified, false);
      assert.equal(s.verification?.verifyError, "certificate is not yet valid");
    },
  );
  await rejects(f.expired, { context: f.ctx, serverName: "expired.example" }, /expired/);
});

t("OCSP: a stapled response is exposed; requireOcsp checks it and fails without one", async (f) => {
  const resp = await f.pki.ocspResponse(f.mx.certFile);
  const file = `${f.pki.dir}/mx.ocsp.der`;
  await Deno.writeFile(file, resp);
  await withServer(f.mx, { context: f.ctx, serverName: "mx.example.com", requestOcsp: true }, (s) => {
    assert.deepEqual(s.ocspResponse, resp);
  }, ["-status_file", file]);
  await withServer(f.mx, { context: f.ctx, serverName: "mx.example.com", requireOcsp: true }, (s) => {
    assert.equal(s.verification?.ocsp?.status, "good");
    assert.equal(s.verification?.verified, true);
  }, ["-status_file", file]);
  await withServer(f.mx, {
    context: f.ctx,
    serverName: "mx.example.com",
    verify: "record",
    requireOcsp: true,
  }, (s) => {
    assert.equal(s.ocspResponse, undefined);
    assert.equal(s.verification?.verified, false);
    assert.match(s.verification?.verifyError ?? "", /^OCSP: no OCSP response stapled/);
  });
  // A good response is worth nothing on a chain that does not verify: the issuer could be the peer's own.
  await withServer(f.mx, {
    context: f.wrongCtx,
    serverName: "mx.example.com",
    verify: "record",
    requireOcsp: true,
  }, (s) => {
    assert.deepEqual(s.ocspResponse, resp);
    assert.equal(s.verification?.verified, false);
    assert.equal(s.verification?.ocsp?.ok, false);
    assert.equal(s.verification?.ocsp?.reason, "certificate chain not verified");
  }, ["-status_file", file]);
});

async function spkiSha256(certFile: string): Promise<Uint8Array> {
  const out = await new Deno.Command("sh", {
    args: ["-c", `openssl x509 -in '${certFile}' -pubkey -noout | openssl pkey -pubin -outform der`],
    stdout: "piped",
  }).output();
  return new Uint8Array(await crypto.subtle.digest("SHA-256", out.stdout));
}

t("DANE-EE 3 1 1 authenticates without a trusted CA; a wrong digest does not", async (f) => {
  const digest = await spkiSha256(f.mx.certFile);
  const dane = (data: Uint8Array) => ({
    tlsa: [{ usage: 3, selector: 1, mtype: 1, data }],
    baseDomain: "mx.example.com",
  });
  await withServer(
    f.mx,
    { context: f.wrongCtx, serverName: "mx.example.com", dane: dane(digest) },
    (s) => {
      assert.equal(s.verification?.verified, true);
      assert.equal(s.verification?.method, "dane");
      assert.equal(s.verification?.daneDepth, 0);
      assert.equal(s.verification?.nameChecked, false);
    },
  );
  const wrong = digest.slice();
  wrong[0] ^= 0xff;
  await withServer(f.mx, {
    context: f.ctx,
    serverName: "mx.example.com",
    verify: "record",
    dane: dane(wrong),
  }, (s) => {
    assert.equal(s.verification?.verified, false);
    assert.equal(s.verification?.method, "pkix");
  });
});

t("both ends of this engine talk to each other over loopback, STARTTLS style", async (f) => {
  const server = new TlsServerContext({
    certificates: [{ certFile: f.mx.chainFile, keyFile: f.mx.keyFile }],
  });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  const c = await Deno.connect({ hostname: "127.0.0.1", port: (listener.addr as Deno.NetAddr).port });
  const s = await accepted;
  try {
    const [srv, cli] = await Promise.all([
      tlsAccept(s, server),
      tlsConnect(c, { context: f.ctx, serverName: "mx.example.com" }),
    ]);
    await cli.write(new TextEncoder().encode("EHLO client\r\n"));
    const buf = new Uint8Array(100);
    const n = await srv.read(buf);
    assert.equal(new TextDecoder().decode(buf.subarray(0, n!)), "EHLO client\r\n");
    assert.equal(srv.info.sni, "mx.example.com");
    srv.close();
    assert.equal(await cli.read(buf), null, "close_notify ends the client's reads");
    cli.close();
    await Promise.all([srv.closed, cli.closed]);
  } finally {
    listener.close();
    server.close();
  }
});
