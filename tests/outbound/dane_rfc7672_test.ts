/**
 * DANE (RFC 7672) cases beyond the basic ones of dane_test.ts, against real peers: unbound validating
 * DNSSEC-signed test zones, Postfix smtpd and a Ferry with per-SNI certificates as receiving MXs, nginx
 * serving MTA-STS policies, and `posttls-finger -l dane` as a second opinion printed beside Ferry's verdict.
 * Covered: secure CNAMEs (§2.2.2: TLSA at the expanded name first, then the original; SNI is the TLSA base
 * domain; DANE-TA names), an insecure CNAME link (no DANE), only unusable TLSA records (encryption required,
 * unauthenticated), the OCSP request under DANE (the reference texts' default, seen in the ClientHello),
 * DANE taking precedence over an MTA-STS enforce policy (RFC 8461 §2), and a TLSA answer with a bogus
 * signature in a zone whose MX and address validate (deferred, never PKIX or clear).
 */
import assert from "node:assert/strict";
import { startPostfix } from "../../bench/_postfix.ts";
import { linesOf, startDownstream } from "../helpers/downstream.ts";
import {
  type DaneOutcome,
  fingerConfigDir,
  type HelloTap,
  sendOne,
  sha256Hex,
  sideBySide,
  spkiDer,
  startDroppingForwarder,
  startHelloTap,
  STATUS_REQUEST,
} from "../helpers/dane.ts";
import { startTestFerry, type TestFerry } from "../helpers/ferry.ts";
import { startNginx } from "../helpers/nginx.ts";
import { createPki, type Issued, type TestPki } from "../helpers/pki.ts";
import { type RigCase, testsOnSharedRig } from "../helpers/shared_rig.ts";
import { startUnbound, type TestZone } from "../helpers/unbound.ts";

const ZERO = "00".repeat(32);
const STS = (mx: string) => `version: STSv1\nmode: enforce\nmx: ${mx}\nmax_age: 86400\n`;

interface Rig {
  pki: TestPki;
  unboundPort: number;
  resolverIp: string;
  nginxPort: number;
  /** Postfix with one certificate for every mx.<domain>.test */
  postfixPort: number;
  postfixHeld: () => Promise<number>;
  /** A Ferry MX choosing its certificate by SNI */
  sni: TestFerry;
  /** A peer without STARTTLS */
  stripPort: number;
  stripMessages: () => number;
  /** Relays to Postfix, recording each ClientHello's extensions */
  tap: HelloTap;
  fingerDir: string;
  stop(): Promise<void>;
}

/** The root CA appended to a leaf's chain: what a DANE-TA(2) server must send. */
async function withRoot(pki: TestPki, leaf: Issued, name: string): Promise<string> {
  const file = `${pki.dir}/${name}-served.pem`;
  await Deno.writeTextFile(
    file,
    (await Deno.readTextFile(leaf.chainFile)) + (await Deno.readTextFile(pki.certFile)),
  );
  return file;
}

/** The peers every case shares (see testsOnSharedRig). */
async function startRig(): Promise<Rig> {
  const pki = await createPki();
  const postfixDomains = [
    "unusable",
    "ocspee",
    "ocspta",
    "ocspnone",
    "stsdane",
    "stsother",
    "stsunusable",
    "tlsafail",
    "tlsatimeout",
  ];
  const leaf = await pki.issue({ cn: "mx.unusable.test", dns: postfixDomains.map((d) => `mx.${d}.test`) });
  const postfix = await startPostfix({
    domain: "unusable.test",
    moreDomains: postfixDomains.slice(1).map((d) => `${d}.test`),
    tls: { certFile: await withRoot(pki, leaf, "postfix"), keyFile: leaf.keyFile },
  });
  const tap = startHelloTap(postfix.port);
  const strip = startDownstream();
  // The SNI MX: one key for host.target.test and mx.cnback.test (the names TLSA 3 1 1 is published for),
  // another as the default, and two DANE-TA certificates that differ only in the names they carry.
  const sniLeaf = await pki.issue({ cn: "host.target.test", dns: ["host.target.test", "mx.cnback.test"] });
  const defaultLeaf = await pki.issue({ cn: "default.test", dns: ["default.test"] });
  const taOriginal = await pki.issue({ cn: "mx.cnta.test", dns: ["mx.cnta.test"] });
  const taNeither = await pki.issue({ cn: "nobody.test", dns: ["nobody.test"] });
  const sni = await startTestFerry({
    relay: { domains: "*", clients: ["127.0.0.0/8"] },
    tls: {
      certificates: [
        {
          cert: sniLeaf.chainFile,
          key: sniLeaf.keyFile,
          serverNames: ["host.target.test", "mx.cnback.test"],
        },
        {
          cert: await withRoot(pki, taOriginal, "ta1"),
          key: taOriginal.keyFile,
          serverNames: ["host3.target.test"],
        },
        {
          cert: await withRoot(pki, taNeither, "ta2"),
          key: taNeither.keyFile,
          serverNames: ["host4.target.test"],
        },
        { cert: defaultLeaf.chainFile, key: defaultLeaf.keyFile },
      ],
    },
  });
  const web = await pki.issue({ cn: "mta-sts", dns: postfixDomains.map((d) => `mta-sts.${d}.test`) });
  const site = (d: string, mx: string) => ({
    host: `mta-sts.${d}.test`,
    certFile: web.chainFile,
    keyFile: web.keyFile,
    body: STS(mx),
  });
  const nginx = await startNginx([
    site("stsdane", "mx.stsdane.test"),
    site("stsother", "other.stsother.test"),
    site("stsunusable", "other.stsunusable.test"),
  ]);
  const spki = await sha256Hex(await spkiDer(leaf.certFile));
  const sniSpki = await sha256Hex(await spkiDer(sniLeaf.certFile));
  const caHash = await sha256Hex(pki.der);
  const P = postfix.port, F = sni.port, S = strip.port, T = tap.port;
  const mxZone = (name: string, more: string[], extra: Partial<TestZone> = {}): TestZone => ({
    name: `${name}.test`,
    signed: true,
    records: ["@ IN MX 10 mx", "mx IN A 127.0.0.1", "mta-sts IN A 127.0.0.1", ...more].join("\n"),
    ...extra,
  });
  const sts = `_mta-sts IN TXT "v=STSv1; id=20261206"`;
  const resolverIp = `127.53.${Math.floor(Math.random() * 200) + 20}.${Math.floor(Math.random() * 200) + 20}`;
  const unbound = await startUnbound({
    extraInterfaces: [`${resolverIp}@53`],
    zones: [
      // CNAMEs: the MX host is an alias (signed), TLSA at the target; at the original name only; an
      // insecure link; DANE-TA certificates naming the original MX name, or neither name.
      { name: "cname.test", signed: true, records: "@ IN MX 10 mx\nmx IN CNAME host.target.test." },
      {
        name: "cnback.test",
        signed: true,
        records: `@ IN MX 10 mx\nmx IN CNAME host2.target.test.\n_${F}._tcp.mx IN TLSA 3 1 1 ${sniSpki}`,
      },
      {
        name: "cninsecure.test",
        signed: true,
        records: `@ IN MX 10 mx\nmx IN CNAME host.unsigned.test.\n_${F}._tcp.mx IN TLSA 3 1 1 ${ZERO}`,
      },
      { name: "cnta.test", signed: true, records: "@ IN MX 10 mx\nmx IN CNAME host3.target.test." },
      { name: "cntabad.test", signed: true, records: "@ IN MX 10 mx\nmx IN CNAME host4.target.test." },
      {
        name: "target.test",
        signed: true,
        records: [
          "host IN A 127.0.0.1",
          `_${F}._tcp.host IN TLSA 3 1 1 ${sniSpki}`,
          "host2 IN A 127.0.0.1",
          "host3 IN A 127.0.0.1",
          `_${F}._tcp.host3 IN TLSA 2 0 1 ${caHash}`,
          "host4 IN A 127.0.0.1",
          `_${F}._tcp.host4 IN TLSA 2 0 1 ${caHash}`,
        ].join("\n"),
      },
      { name: "unsigned.test", records: `host IN A 127.0.0.1\n_${F}._tcp.host IN TLSA 3 1 1 ${ZERO}` },
      // Only unusable records (PKIX-TA 0, PKIX-EE 1), to Postfix and to a peer without STARTTLS.
      mxZone("unusable", [`_${P}._tcp.mx IN TLSA 1 1 1 ${spki}`, `_${P}._tcp.mx IN TLSA 0 0 1 ${caHash}`]),
      mxZone("unstrip", [`_${S}._tcp.mx IN TLSA 1 1 1 ${spki}`]),
      mxZone("clear", []),
      // OCSP under DANE: through the tap.
      mxZone("ocspee", [`_${T}._tcp.mx IN TLSA 3 1 1 ${spki}`]),
      mxZone("ocspta", [`_${T}._tcp.mx IN TLSA 2 0 1 ${caHash}`]),
      mxZone("ocspnone", []),
      // DANE and MTA-STS together.
      mxZone("stsdane", [`_${P}._tcp.mx IN TLSA 3 1 1 ${spki}`, sts]),
      mxZone("stsother", [`_${P}._tcp.mx IN TLSA 3 1 1 ${spki}`, sts]),
      mxZone("stsunusable", [`_${P}._tcp.mx IN TLSA 1 1 1 ${spki}`, sts]),
      // MX and address validate, the TLSA answer does not.
      mxZone("tlsafail", [`_${P}._tcp.mx IN TLSA 3 1 1 ${spki}`], { badSignatures: ["TLSA"] }),
      // Valid everywhere; the test's forwarder drops the TLSA queries (a timeout).
      mxZone("tlsatimeout", [`_${P}._tcp.mx IN TLSA 3 1 1 ${spki}`]),
    ],
  });
  const fingerDir = await fingerConfigDir();
  return {
    pki,
    unboundPort: unbound.port,
    resolverIp,
    nginxPort: nginx.port,
    postfixPort: P,
    postfixHeld: () => postfix.heldCount(),
    sni,
    stripPort: S,
    stripMessages: () => strip.messages.length,
    tap,
    fingerDir,
    async stop() {
      await tap.stop();
      await strip.stop();
      await sni.stop();
      await Deno.remove(sni.dir, { recursive: true }).catch(() => {});
      await postfix.stop().catch(() => {});
      await nginx.stop();
      await unbound.stop();
      await pki.cleanup();
      await Deno.remove(fingerDir, { recursive: true }).catch(() => {});
    },
  };
}

type Outcome = DaneOutcome;

/** Which MX each test domain's route goes to. */
function routes(r: Rig) {
  return [
    {
      domains: ["cname.test", "cnback.test", "cninsecure.test", "cnta.test", "cntabad.test"],
      port: r.sni.port,
    },
    { domains: ["unstrip.test", "clear.test"], port: r.stripPort },
    { domains: ["ocspee.test", "ocspta.test", "ocspnone.test"], port: r.tap.port },
    { domains: "*", port: r.postfixPort },
  ].map((x) => ({ ...x, mx: true }));
}

/** Sends one message to user@`domain` through a Ferry that trusts unbound's AD bit; returns its outcome. */
function send(
  r: Rig,
  domain: string,
  delivery: Record<string, unknown> = {},
  dns: Record<string, unknown> = { nameservers: [{ address: "127.0.0.1", port: r.unboundPort }] },
): Promise<Outcome> {
  return sendOne({
    routes: routes(r),
    delivery: {
      enable: true,
      mtaSts: { port: r.nginxPort, caFile: r.pki.certFile, timeout: "5s" },
      ...delivery,
    },
    dns,
  }, domain);
}

/** Messages the SNI MX has accepted so far. */
const sniReceived = (r: Rig) => linesOf(r.sni.memlog, "<=").length;

const cases: RigCase<Rig>[] = [
  {
    name:
      "an MX host that is a secure CNAME: TLSA at the target's name, SNI the target; posttls-finger agrees",
    async fn(r) {
      const o = await send(r, "cname.test");
      const pf = await sideBySide(r, "cname.test", r.sni.port, o);
      // The server gives the TLSA-matching key only for SNI host.target.test: a wrong SNI would defer.
      assert.equal(o.kind, "=>", o.line);
      assert.match(o.line, / H=mx\.cname\.test \[127\.0\.0\.1\]:\d+ .* CV=dane TLS=dane\(3\) /);
      assert.equal(pf, "verified");
    },
  },
  {
    name: "a secure CNAME without TLSA at the target: TLSA at the original name, SNI the original name",
    async fn(r) {
      const o = await send(r, "cnback.test");
      const pf = await sideBySide(r, "cnback.test", r.sni.port, o);
      assert.equal(o.kind, "=>", o.line);
      assert.match(o.line, / H=mx\.cnback\.test .* CV=dane TLS=dane\(3\) /);
      assert.equal(pf, "verified");
    },
  },
  {
    name: "a CNAME into an unsigned zone: no DANE (neither name's wrong TLSA is used), opportunistic TLS",
    async fn(r) {
      const o = await send(r, "cninsecure.test");
      const pf = await sideBySide(r, "cninsecure.test", r.sni.port, o);
      assert.equal(o.kind, "=>", o.line);
      assert.match(o.line, / CV=no TLS=opportunistic /);
      assert.equal(o.delivery?.security?.tlsRequired, "none");
      assert.equal(pf, "untrusted");
    },
  },
  {
    name:
      "DANE-TA through a CNAME: a certificate for the original MX name passes, one for neither name defers",
    async fn(r) {
      const ok = await send(r, "cnta.test");
      const pfOk = await sideBySide(r, "cnta.test", r.sni.port, ok);
      assert.equal(ok.kind, "=>", ok.line);
      assert.match(ok.line, / CV=dane TLS=dane\(2\) /);
      // Postfix differs here: its DANE-TA name check accepts the TLSA base domain only (README: choices).
      console.log(`${"".padEnd(16)} (posttls-finger ${pfOk}: it does not accept the original MX name)`);
      const before = sniReceived(r);
      const bad = await send(r, "cntabad.test");
      const pfBad = await sideBySide(r, "cntabad.test", r.sni.port, bad);
      assert.equal(bad.kind, "==", bad.line);
      assert.match(bad.line, / TLS=dane: dane: certificate verification failed/);
      assert.equal(bad.daneFail, 1);
      assert.equal(sniReceived(r), before, "nothing reached the MX");
      assert.doesNotMatch(pfBad, /^verified/);
    },
  },
  {
    name: "only unusable TLSA records (usages 0, 1): encrypted without authentication (CV=no TLS=encrypted)",
    async fn(r) {
      const o = await send(r, "unusable.test");
      const pf = await sideBySide(r, "unusable.test", r.postfixPort, o);
      assert.equal(o.kind, "=>", o.line);
      assert.match(o.line, / X=TLS1\.[23]:\S+ CV=no TLS=encrypted /);
      assert.deepEqual(o.delivery?.security, {
        policy: "encrypted",
        tlsRequired: "encrypted",
        mxRequired: "none",
        requiredBy: "dane",
      });
      assert.equal(o.daneFail, 0);
      // Postfix also encrypts without authenticating here ("Untrusted").
      assert.equal(pf, "untrusted");
    },
  },
  {
    name: "only unusable TLSA records and a peer without STARTTLS: deferred, nothing in clear (a peer with " +
      "no TLSA at all gets the mail in clear)",
    async fn(r) {
      const o = await send(r, "unstrip.test");
      const pf = await sideBySide(r, "unstrip.test", r.stripPort, o);
      assert.equal(o.kind, "==", o.line);
      assert.doesNotMatch(pf, /^verified|^untrusted|^anonymous|^trusted/);
      assert.match(o.line, / TLS=dane: dane: TLS required but STARTTLS not offered/);
      assert.equal(o.defer?.security?.tlsRequired, "encrypted");
      assert.equal(r.stripMessages(), 0);
      const clear = await send(r, "clear.test");
      assert.equal(clear.kind, "=>", clear.line);
      assert.match(clear.line, / TLS=none /);
      assert.equal(r.stripMessages(), 1);
    },
  },
  {
    name: "OCSP under DANE (the reference texts' default): no status_request with DANE-EE; requested with " +
      "DANE-TA only and without DANE",
    async fn(r) {
      const hello = async (domain: string, label: RegExp) => {
        const n = r.tap.hellos.length;
        const o = await send(r, domain);
        assert.equal(o.kind, "=>", o.line);
        assert.match(o.line, label);
        assert.equal(r.tap.hellos.length, n + 1, "one ClientHello seen");
        return r.tap.hellos[n];
      };
      const ee = await hello("ocspee.test", / CV=dane TLS=dane\(3\) /);
      const ta = await hello("ocspta.test", / CV=dane TLS=dane\(2\) /);
      const none = await hello("ocspnone.test", / TLS=opportunistic /);
      console.log(`ClientHello extensions: dane(3) ${ee}; dane(2) ${ta}; no DANE ${none}`);
      assert.ok(!ee.includes(STATUS_REQUEST), "no OCSP request with a DANE-EE record");
      assert.ok(ta.includes(STATUS_REQUEST), "DANE-TA only: OCSP requested (hostsRequestOcsp default)");
      assert.ok(none.includes(STATUS_REQUEST), "without DANE: OCSP requested (hostsRequestOcsp default)");
      // hostsRequestOcsp empty: not even without DANE.
      const n = r.tap.hellos.length;
      const off = await send(r, "ocspnone.test", { hostsRequestOcsp: [] });
      assert.equal(off.kind, "=>", off.line);
      assert.ok(!r.tap.hellos[n].includes(STATUS_REQUEST));
    },
  },
  {
    name: "DANE and an MTA-STS enforce policy: DANE decides (TLS=dane), even for an MX not in the policy",
    async fn(r) {
      const pkix = { tlsVerifyCertificates: r.pki.certFile };
      const listed = await send(r, "stsdane.test", pkix);
      assert.equal(listed.kind, "=>", listed.line);
      assert.match(listed.line, / CV=dane TLS=dane\(3\) /);
      const unlisted = await send(r, "stsother.test", pkix);
      assert.equal(unlisted.kind, "=>", unlisted.line);
      assert.match(unlisted.line, / H=mx\.stsother\.test .* CV=dane TLS=dane\(3\) /);
      // Without usable TLSA the same policy applies: the unlisted MX is not tried.
      const held = await r.postfixHeld();
      const sts = await send(r, "stsunusable.test", pkix);
      assert.equal(sts.kind, "==", sts.line);
      assert.match(sts.line, /mta-sts: mx\.stsunusable\.test is not in the policy of stsunusable\.test/);
      assert.equal(await r.postfixHeld(), held);
    },
  },
  {
    name: "a TLSA answer with a bogus signature (MX and address valid): deferred, never PKIX or clear",
    async fn(r) {
      const held = await r.postfixHeld();
      // Even with the test CA trusted for PKIX, nothing falls back to it.
      const o = await send(r, "tlsafail.test", { tlsVerifyCertificates: r.pki.certFile });
      const pf = await sideBySide(r, "tlsafail.test", r.postfixPort, o);
      assert.equal(o.kind, "==", o.line);
      assert.match(
        o.line,
        / H=mx\.tlsafail\.test .* TLS=dane: dane: TLSA lookup for _\d+\._tcp\.mx\.tlsafail\.test failed: .*SERVFAIL/,
      );
      assert.equal(o.defer?.errno, "DANE");
      assert.equal(await r.postfixHeld(), held, "nothing reached the MX");
      assert.doesNotMatch(pf, /^verified|^untrusted|^anonymous|^trusted/);
    },
  },
  {
    name: "a TLSA query that times out (MX and address answered and valid): deferred, never PKIX or clear",
    async fn(r) {
      const fwd = await startDroppingForwarder(r.unboundPort, ["TLSA"]);
      try {
        const held = await r.postfixHeld();
        const o = await send(r, "tlsatimeout.test", { tlsVerifyCertificates: r.pki.certFile }, {
          nameservers: [{ address: "127.0.0.1", port: fwd.port }],
          // Long enough for the MX and A answers on a loaded machine; the dropped TLSA query still times out.
          timeout: "1500ms",
        });
        console.log(`${"tlsatimeout.test".padEnd(16)} Ferry: ${o.line.slice(0, 200)}`);
        assert.ok(
          fwd.dropped.some((q) => /^_\d+\._tcp\.mx\.tlsatimeout\.test TLSA$/.test(q)),
          `${fwd.dropped}`,
        );
        assert.equal(o.kind, "==", o.line);
        assert.match(
          o.line,
          / H=mx\.tlsatimeout\.test .* TLS=dane: dane: TLSA lookup for _\d+\._tcp\.mx\.tlsatimeout\.test failed/,
        );
        assert.equal(o.defer?.errno, "DANE");
        assert.equal(await r.postfixHeld(), held, "nothing reached the MX");
      } finally {
        await fwd.stop();
      }
    },
  },
];

testsOnSharedRig("DANE (RFC 7672)", startRig, cases);
