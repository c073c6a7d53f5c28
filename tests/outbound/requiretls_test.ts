/**
 * REQUIRETLS (RFC 8689): offered only over TLS and kept with the message (Python's smtplib as the client);
 * outbound it needs an authenticated MX, authenticated TLS and a peer that offers REQUIRETLS, else the
 * recipient fails with 5.7.10 (Postfix smtpd as the peer without it); `TLS-Required: No` is honoured.
 */
import assert from "node:assert/strict";
import { startPostfix } from "../../bench/_postfix.ts";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import type { FerryConfig } from "../../mod.ts";
import { linesOf, startFerryIn, waitFor, withTlsDownstream } from "../helpers/downstream.ts";
import { startTestFerry } from "../helpers/ferry.ts";
import { runPython } from "../helpers/peers.ts";
import { createPki, ferryTls, type Issued } from "../helpers/pki.ts";
import { spkiSha256 } from "../helpers/dane.ts";

const SEND = `
import smtplib, ssl, sys
port, mode, header = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
c = smtplib.SMTP("127.0.0.1", port)
c.ehlo("py.test")
print("plain-offers", c.has_extn("requiretls"))
code, _ = c.mail("sender@client.test", ["REQUIRETLS"])
print("plain-mail", code)
c.rset()
if mode == "tls":
    c.starttls(context=ctx); c.ehlo("py.test")
    print("tls-offers", c.has_extn("requiretls"))
opts = ["REQUIRETLS"] if mode == "tls" and header != "no-param" else []
msg = ("TLS-Required: No\\r\\n" if header == "tls-required-no" else "") + "Subject: t\\r\\n\\r\\nbody\\r\\n"
c.sendmail("sender@client.test", ["user@example.test"], msg, mail_options=opts)
print("sent")
c.quit()
`;

/**
 * RFC 8689 §5: the report on a REQUIRETLS message returns the header only (as RET=HDRS, though the failure
 * default is FULL) and is itself queued with REQUIRETLS, so it never travels in clear.
 */
function assertHeadersOnlyRequireTls(envelope: { requireTls?: boolean }, text: string): void {
  assert.equal(envelope.requireTls, true, "the report is sent with REQUIRETLS");
  assert.match(text, /Content-Type: text\/rfc822-headers/);
  assert.doesNotMatch(text, /message\/rfc822/);
  assert.match(text, /^Subject: t\r$/m, "the original header is returned");
  assert.doesNotMatch(text, /^body\r$/m, "the original body is not returned");
}

/** A resolver with example.test → mx.example.test → 127.0.0.1, DNSSEC-validated or not, with TLSA. */
function resolver(port: number, tlsaHex: string | undefined, ad: boolean): MemoryResolver {
  const r = new MemoryResolver({
    ad,
    records: {
      "example.test": { MX: [{ preference: 10, exchange: "mx.example.test" }] },
      "mx.example.test": { A: ["127.0.0.1"] },
      "client.test": { A: ["192.0.2.1"] },
    },
  });
  if (tlsaHex) {
    r.set(`_${port}._tcp.mx.example.test`, "TLSA", [{
      usage: 3,
      selector: 1,
      matchingType: 1,
      data: Uint8Array.fromHex(tlsaHex),
    }]);
  }
  return r;
}

/** An upstream Ferry with STARTTLS (so it can accept REQUIRETLS) delivering example.test to `port`. */
/** The sending Ferry: serves `leaf` to its clients, routes every domain by MX to `port`. */
async function upstream(port: number, res: MemoryResolver, leaf: Issued, extra: FerryConfig = {}) {
  return await startFerryIn({
    tls: ferryTls(leaf),
    routes: [{ domains: "*", mx: true, port }],
    retry: [{ domains: "*", rules: [{ every: "1h", until: "2h" }] }],
    delivery: { enable: true, mtaSts: { enable: false } },
    ...extra,
  }, { resolver: res });
}

Deno.test("REQUIRETLS is offered only over TLS, refused in clear, and kept with the message", async () => {
  await withTlsDownstream(async ({ down }) => {
    const out = await runPython(SEND, [String(down.port), "tls", "none"], { timeoutMs: 15_000 });
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /plain-offers False/);
    assert.match(out.stdout, /plain-mail 555/);
    assert.match(out.stdout, /tls-offers True/);
    const [stored] = await down.spool.list();
    assert.equal(stored.envelope.requireTls, true);
  });
});

Deno.test("REQUIRETLS over DANE to a peer that offers it: delivered, and passed on", async () => {
  await withTlsDownstream(async ({ down, leaf }) => {
    const res = resolver(down.port, await spkiSha256(leaf.certFile), true);
    const up = await upstream(down.port, res, leaf);
    try {
      const out = await runPython(SEND, [String(up.port), "tls", "none"], { timeoutMs: 15_000 });
      assert.equal(out.code, 0, out.stderr);
      await waitFor(
        () => linesOf(up.memlog, "=>").length + linesOf(up.memlog, "**").length > 0,
        10_000,
        "outcome",
      );
      assert.match(linesOf(up.memlog, "=>")[0] ?? linesOf(up.memlog, "**")[0], /CV=dane TLS=dane\(3\)/);
      const [got] = await down.spool.list();
      assert.equal(got.envelope.requireTls, true);
    } finally {
      await up.dispose();
    }
  });
});

Deno.test("REQUIRETLS without a DNSSEC- or MTA-STS-authenticated MX fails with 5.7.10 and a report", async () => {
  await withTlsDownstream(async ({ down, leaf }) => {
    const up = await upstream(down.port, resolver(down.port, undefined, false), leaf);
    try {
      const out = await runPython(SEND, [String(up.port), "tls", "none"], { timeoutMs: 15_000 });
      assert.equal(out.code, 0, out.stderr);
      await waitFor(() => linesOf(up.memlog, "**").length > 0, 10_000, "a failure");
      assert.match(
        linesOf(up.memlog, "**")[0],
        /REQUIRETLS: .*requiretls: the MX mx\.example\.test of example\.test is authenticated neither by DNSSEC nor by MTA-STS/,
      );
      assert.equal(await down.spool.count(), 0);
      // The report is queued with REQUIRETLS (RFC 8689 §5), so to client.test's equally unauthenticated MX
      // it fails the same way instead of going out in clear (its content is checked in the Postfix case).
      const isReport = (text: string) => /^<= <> R=\S+ .*\(failure report\)/.test(text);
      await waitFor(() => up.memlog.lines.some((l) => isReport(l.text)), 10_000, "a failure report queued");
      const queued = up.memlog.lines.find((l) => isReport(l.text))!;
      await waitFor(
        () => up.memlog.lines.some((l) => l.text.startsWith("** ") && l.fields.id === queued.fields.id),
        10_000,
        "the report's own outcome",
      );
      const own = up.memlog.lines.find((l) => l.text.startsWith("** ") && l.fields.id === queued.fields.id)!;
      assert.match(own.text, /sender@client\.test .*REQUIRETLS: .*requiretls: the MX/);
    } finally {
      await up.dispose();
    }
  });
});

Deno.test("REQUIRETLS to a DANE-authenticated Postfix that does not offer it: failed with 5.7.10", async () => {
  const pki = await createPki();
  const leaf = await pki.issue({ cn: "mx.example.test", dns: ["mx.example.test"] });
  const postfix = await startPostfix({
    domain: "example.test",
    tls: { certFile: leaf.chainFile, keyFile: leaf.keyFile },
  });
  try {
    const up = await upstream(
      postfix.port,
      resolver(postfix.port, await spkiSha256(leaf.certFile), true),
      leaf,
    );
    try {
      const out = await runPython(SEND, [String(up.port), "tls", "none"], { timeoutMs: 15_000 });
      assert.equal(out.code, 0, out.stderr);
      await waitFor(() => linesOf(up.memlog, "**").length > 0, 15_000, "a failure");
      assert.match(linesOf(up.memlog, "**")[0], /REQUIRETLS needed but not offered by the peer/);
      assert.equal(await postfix.heldCount(), 0);
      const bounce = (await up.spool.list()).find((e) => e.envelope.sender === "");
      const text = new TextDecoder().decode(await up.spool.readData(bounce!.envelope.id));
      assert.match(text, /Status: 5\.7\.10/);
      assertHeadersOnlyRequireTls(bounce!.envelope, text);
    } finally {
      await up.dispose();
    }
  } finally {
    await postfix.stop();
    await pki.cleanup();
  }
});

Deno.test("TLS-Required: No: a wrong TLSA record does not stop delivery; without the header it defers", async () => {
  await withTlsDownstream(async ({ down, leaf }) => {
    const res = resolver(down.port, "00".repeat(32), true);
    const up = await upstream(down.port, res, leaf);
    try {
      let out = await runPython(SEND, [String(up.port), "plain", "tls-required-no"], { timeoutMs: 15_000 });
      assert.equal(out.code, 0, out.stderr);
      await waitFor(() => linesOf(up.memlog, "=>").length > 0, 10_000, "a delivery");
      assert.match(linesOf(up.memlog, "=>")[0], / TLS=opportunistic /);
      out = await runPython(SEND, [String(up.port), "plain", "none"], { timeoutMs: 15_000 });
      assert.equal(out.code, 0, out.stderr);
      await waitFor(() => linesOf(up.memlog, "==").length > 0, 10_000, "a deferral");
      assert.match(linesOf(up.memlog, "==")[0], /TLS=dane: dane: certificate verification failed/);
    } finally {
      await up.dispose();
    }
  });
});

/**
 * Two MX hosts (RFC 8689 §4.2.1): the preferred one is a DANE-authenticated Postfix without REQUIRETLS; the
 * second is `second` (a Ferry offering it on 127.0.0.2, same port) or the same Postfix again under another
 * name. The first must be left and the second tried; only when no host takes the message does it fail.
 */
async function twoMxRig(
  second: "ferry" | "postfix",
  fn: (
    r: {
      up: Awaited<ReturnType<typeof upstream>>;
      heldCount: () => Promise<number>;
      downCount: () => Promise<number>;
    },
  ) => Promise<void>,
) {
  const pki = await createPki();
  const leaf = await pki.issue({ cn: "mx1.example.test", dns: ["mx1.example.test", "mx2.example.test"] });
  const postfix = await startPostfix({
    domain: "example.test",
    tls: { certFile: leaf.chainFile, keyFile: leaf.keyFile },
  });
  const down = second === "ferry"
    ? await startTestFerry({
      listen: [{ address: "127.0.0.2", port: postfix.port }],
      tls: ferryTls(leaf),
    })
    : undefined;
  try {
    const spki = Uint8Array.fromHex(await spkiSha256(leaf.certFile));
    const res = new MemoryResolver({
      ad: true,
      records: {
        "example.test": {
          MX: [{ preference: 10, exchange: "mx1.example.test" }, {
            preference: 20,
            exchange: "mx2.example.test",
          }],
        },
        "mx1.example.test": { A: ["127.0.0.1"] },
        "mx2.example.test": { A: [down ? "127.0.0.2" : "127.0.0.1"] },
        "client.test": { A: ["192.0.2.1"] },
      },
    });
    for (const h of ["mx1", "mx2"]) {
      res.set(`_${postfix.port}._tcp.${h}.example.test`, "TLSA", [{
        usage: 3,
        selector: 1,
        matchingType: 1,
        data: spki,
      }]);
    }
    const up = await upstream(postfix.port, res, leaf);
    try {
      await fn({
        up,
        heldCount: () => postfix.heldCount(),
        downCount: async () => (await down?.spool.count()) ?? 0,
      });
    } finally {
      await up.dispose();
    }
  } finally {
    if (down) {
      await down.stop();
      await Deno.remove(down.dir, { recursive: true }).catch(() => {});
    }
    await postfix.stop();
    await pki.cleanup();
  }
}

Deno.test("REQUIRETLS: a preferred MX without it is left and the next MX that offers it gets the message", async () => {
  await twoMxRig("ferry", async ({ up, heldCount, downCount }) => {
    const out = await runPython(SEND, [String(up.port), "tls", "none"], { timeoutMs: 15_000 });
    assert.equal(out.code, 0, out.stderr);
    await waitFor(
      () => linesOf(up.memlog, "=>").length + linesOf(up.memlog, "**").length > 0,
      15_000,
      "an outcome",
    );
    assert.deepEqual(linesOf(up.memlog, "**"), []);
    assert.match(
      linesOf(up.memlog, "=>")[0],
      /H=mx2\.example\.test \[127\.0\.0\.2\].* CV=dane TLS=dane\(3\)/,
    );
    const refused = up.memlog.lines.find((l) => l.fields.event === "host_error");
    assert.equal(refused?.fields.host, "mx1.example.test");
    assert.equal(refused?.fields.errno, "REQUIRETLS");
    assert.equal(await heldCount(), 0, "nothing went to the Postfix without REQUIRETLS");
    assert.equal(await downCount(), 1);
  });
});

Deno.test("REQUIRETLS: when no MX offers it, every MX is tried and then the message fails with 5.7.10", async () => {
  await twoMxRig("postfix", async ({ up, heldCount }) => {
    const out = await runPython(SEND, [String(up.port), "tls", "none"], { timeoutMs: 15_000 });
    assert.equal(out.code, 0, out.stderr);
    await waitFor(() => linesOf(up.memlog, "**").length > 0, 15_000, "a failure");
    assert.match(
      linesOf(up.memlog, "**")[0],
      /REQUIRETLS: requiretls: 550 5\.7\.10 REQUIRETLS needed but not offered/,
    );
    const refused = up.memlog.lines.filter((l) => l.fields.event === "host_error").map((l) => l.fields.host);
    // (then the failure report's own delivery to client.test's host)
    assert.deepEqual(refused.slice(0, 2), ["mx1.example.test", "mx2.example.test"]);
    assert.equal(await heldCount(), 0);
  });
});

Deno.test("REQUIRETLS: a TLSA lookup that fails (SERVFAIL) defers the message instead of failing it", async () => {
  await withTlsDownstream(async ({ down, leaf }) => {
    const res = resolver(down.port, await spkiSha256(leaf.certFile), true);
    res.fail(`_${down.port}._tcp.mx.example.test`, "TLSA", "SERVFAIL");
    const up = await upstream(down.port, res, leaf);
    try {
      const out = await runPython(SEND, [String(up.port), "tls", "none"], { timeoutMs: 15_000 });
      assert.equal(out.code, 0, out.stderr);
      await waitFor(
        () => linesOf(up.memlog, "==").length + linesOf(up.memlog, "**").length > 0,
        10_000,
        "an outcome",
      );
      assert.deepEqual(linesOf(up.memlog, "**"), []);
      assert.match(linesOf(up.memlog, "==")[0], /dane: TLSA lookup for _\d+\._tcp\.mx\.example\.test failed/);
      const [kept] = await up.spool.list();
      assert.equal(kept.envelope.requireTls, true, "the message stays queued for its retry");
      assert.equal(await down.spool.count(), 0);
    } finally {
      await up.dispose();
    }
  });
});

Deno.test("REQUIRETLS: a certificate that does not match the TLSA record fails the message with 5.7.10", async () => {
  await withTlsDownstream(async ({ down, leaf }) => {
    const res = resolver(down.port, "00".repeat(32), true);
    const up = await upstream(down.port, res, leaf);
    try {
      const out = await runPython(SEND, [String(up.port), "tls", "none"], { timeoutMs: 15_000 });
      assert.equal(out.code, 0, out.stderr);
      await waitFor(() => linesOf(up.memlog, "**").length > 0, 10_000, "a failure");
      assert.match(linesOf(up.memlog, "**")[0], /REQUIRETLS: dane: certificate verification failed/);
      assert.equal(await down.spool.count(), 0);
    } finally {
      await up.dispose();
    }
  });
});

Deno.test("REQUIRETLS: a pooled session whose certificate name was never checked does not carry it", async () => {
  // The downstream's certificate chains to the trusted test CA but names another host; names are not checked
  // for this host (tlsVerifyCertHostnames: []), so an ordinary message goes out over a verified chain and
  // leaves its session in the pool. A REQUIRETLS message needs the name: it must not reuse that session.
  const pki = await createPki();
  const leaf = await pki.issue({ cn: "other.example.test", dns: ["other.example.test"] });
  const down = await startTestFerry({ tls: ferryTls(leaf) });
  const res = new MemoryResolver({ records: { "mx.example.test": { A: ["127.0.0.1"] } } });
  const up = await startFerryIn({
    tls: ferryTls(leaf),
    routes: [{ domains: "*", hosts: [`mx.example.test:${down.port}`] }],
    retry: [{ domains: "*", rules: [{ every: "1h", until: "2h" }] }],
    delivery: {
      enable: true,
      idleTimeout: "60s",
      tlsVerifyCertificates: pki.certFile,
      tlsVerifyCertHostnames: [],
      mtaSts: { enable: false },
    },
  }, { resolver: res });
  try {
    let out = await runPython(SEND, [String(up.port), "tls", "no-param"], { timeoutMs: 15_000 });
    assert.equal(out.code, 0, out.stderr);
    await waitFor(() => linesOf(up.memlog, "=>").length > 0, 15_000, "the first delivery");
    assert.match(linesOf(up.memlog, "=>")[0], / CV=yes /, "the chain verified, the name unchecked");
    out = await runPython(SEND, [String(up.port), "tls", "none"], { timeoutMs: 15_000 });
    assert.equal(out.code, 0, out.stderr);
    await waitFor(
      () =>
        linesOf(up.memlog, "=>").length + linesOf(up.memlog, "**").length + linesOf(up.memlog, "==").length >
          1,
      15_000,
      "the second outcome",
    );
    assert.equal(linesOf(up.memlog, "=>").length, 1, "the REQUIRETLS message was not delivered");
    assert.match(
      linesOf(up.memlog, "**")[0],
      /REQUIRETLS: requiretls: certificate verification failed: certificate does not match mx\.example\.test/,
    );
    assert.equal(await down.spool.count(), 1);
  } finally {
    await up.dispose();
    await down.stop();
    await Deno.remove(down.dir, { recursive: true }).catch(() => {});
    await pki.cleanup();
  }
});

Deno.test("REQUIRETLS: deferred only by a temporary security failure, it fails with 5.7.10 when the retry rules give up", async () => {
  await withTlsDownstream(async ({ down, leaf }) => {
    const res = resolver(down.port, await spkiSha256(leaf.certFile), true);
    res.fail(`_${down.port}._tcp.mx.example.test`, "TLSA", "SERVFAIL");
    const up = await upstream(down.port, res, leaf, {
      retry: [{ domains: "*", rules: [{ every: "1s", until: "1s" }] }],
    });
    try {
      const out = await runPython(SEND, [String(up.port), "tls", "none"], { timeoutMs: 15_000 });
      assert.equal(out.code, 0, out.stderr);
      await waitFor(() => linesOf(up.memlog, "**").length > 0, 20_000, "the failure at retry expiry");
      assert.ok(linesOf(up.memlog, "==").length > 0, "deferred first");
      assert.match(linesOf(up.memlog, "**")[0], /retry timeout exceeded .*TLSA lookup .* failed/);
      await waitFor(
        async () => (await up.spool.list()).some((e) => e.envelope.sender === ""),
        10_000,
        "the failure report",
      );
      const bounce = (await up.spool.list()).find((e) => e.envelope.sender === "")!;
      const text = new TextDecoder().decode(await up.spool.readData(bounce.envelope.id));
      assert.match(text, /Status: 5\.7\.10/);
    } finally {
      await up.dispose();
    }
  });
});
