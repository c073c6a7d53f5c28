/**
 * DANE (RFC 7672) against real peers: unbound validating DNSSEC-signed test zones, Postfix smtpd with a
 * test-CA certificate as the receiving MX, and Postfix's own DANE client `posttls-finger -l dane` as a
 * second opinion printed next to Ferry's verdict for every case. The same Postfix has two more smtpd
 * listeners: one whose certificate names neither the MX host nor the TLSA base domain (`badname`) and one
 * that offers no STARTTLS at all (`nostarttls`); its `tls_server_sni_maps` never matches, so its log names
 * the SNI each client sent ("TLS SNI … not matched, using default chain").
 */
import assert from "node:assert/strict";
import { startPostfix } from "../../bench/_postfix.ts";
import type { FerryConfig } from "../../mod.ts";
import { linesOf, startDownstream, startFerryIn, submit, waitFor } from "../helpers/downstream.ts";
import {
  type DaneOutcome,
  fingerConfigDir,
  sendOne,
  sha256Hex,
  sideBySide,
  spkiDer,
} from "../helpers/dane.ts";
import { createPki } from "../helpers/pki.ts";
import { type RigCase, testsOnSharedRig } from "../helpers/shared_rig.ts";
import { startUnbound, type TestZone } from "../helpers/unbound.ts";

interface Rig {
  unboundPort: number;
  resolverIp: string;
  postfixPort: number;
  /** The Postfix listener whose certificate chains to the test CA but names only other.example */
  badnamePort: number;
  /** The Postfix listener without STARTTLS (smtpd_tls_security_level = none) */
  noTlsPort: number;
  /** Lines of Postfix's log that contain `needle` */
  postfixLog: (needle: string) => Promise<string[]>;
  stripPort: number;
  stripMessages: () => number;
  postfixHeld: () => Promise<number>;
  fingerDir: string;
  /** The test CA's certificate (PEM file) */
  caFile: string;
  stop(): Promise<void>;
}

/** One unbound, one Postfix, one STARTTLS-less peer for every case (shared: see testsOnSharedRig). */
async function startRig(): Promise<Rig> {
  const pki = await createPki();
  const names = ["good", "wrong", "ta", "plain", "bogus", "strip"].map((z) => `mx.${z}.test`);
  const leaf = await pki.issue({
    cn: "mx.good.test",
    dns: [...names, "mx.unsigned.test", "srv.ta-alias.test"],
  });
  // Chains to the same test CA (so a DANE-TA record on the CA matches) but names neither mx.ta-badname.test
  // nor ta-badname.test.
  const badLeaf = await pki.issue({ cn: "other.example", dns: ["other.example"] });
  // DANE-TA(2) needs the trust anchor in the chain the server sends: leaf + the test root.
  const root = await Deno.readTextFile(pki.certFile);
  const served = `${pki.dir}/served-chain.pem`;
  await Deno.writeTextFile(served, (await Deno.readTextFile(leaf.chainFile)) + root);
  const badServed = `${pki.dir}/badname-chain.pem`;
  await Deno.writeTextFile(badServed, (await Deno.readTextFile(badLeaf.chainFile)) + root);
  const postfix = await startPostfix({
    domain: "good.test",
    moreDomains: [
      "wrong.test",
      "ta.test",
      "plain.test",
      "bogus.test",
      "mixed.test",
      "strip.test",
      "ta-badname.test",
      "ta-alias.test",
      "nostarttls.test",
      "nostarttls-pkix.test",
    ],
    tls: { certFile: served, keyFile: leaf.keyFile },
    // A map that matches no name: Postfix then logs the SNI it got and serves its default chain.
    mainCf: [`tls_server_sni_maps = inline:{ {sni-never-matches.invalid = ${served}} }`],
    extraSmtpd: [
      {
        name: "badname",
        overrides: [`smtpd_tls_cert_file=${badServed}`, `smtpd_tls_key_file=${badLeaf.keyFile}`],
      },
      { name: "nostarttls", overrides: ["smtpd_tls_security_level=none"] },
    ],
  });
  const { badname: badnamePort, nostarttls: noTlsPort } = postfix.extraPorts;
  const strip = startDownstream();
  const spki = await sha256Hex(await spkiDer(leaf.certFile));
  const caHash = await sha256Hex(pki.der);
  const p = postfix.port;
  const portOf: Record<string, number> = {
    strip: strip.port,
    "ta-badname": badnamePort,
    nostarttls: noTlsPort,
  };
  const zone = (name: string, tlsa: string, extra: Partial<TestZone> = {}): TestZone => ({
    name: `${name}.test`,
    signed: true,
    records: [
      "@ IN MX 10 mx",
      "mx IN A 127.0.0.1",
      `_${portOf[name] ?? p}._tcp.mx IN TLSA ${tlsa}`,
    ].join("\n"),
    ...extra,
  });
  const resolverIp = `127.53.${Math.floor(Math.random() * 200) + 20}.${Math.floor(Math.random() * 200) + 20}`;
  const unbound = await startUnbound({
    extraInterfaces: [`${resolverIp}@53`],
    zones: [
      zone("good", `3 1 1 ${spki}`),
      zone("wrong", `3 1 1 ${"00".repeat(32)}`),
      zone("ta", `2 0 1 ${caHash}`),
      zone("plain", `3 1 1 ${"00".repeat(32)}`, { signed: false }),
      zone("bogus", `3 1 1 ${spki}`, { bogus: true }),
      zone("strip", `3 1 1 ${spki}`),
      zone("ta-badname", `2 0 1 ${caHash}`),
      // The MX host is a secure alias: the TLSA base domain (and the SNI) is where the CNAME chain ends.
      {
        name: "ta-alias.test",
        signed: true,
        records: `@ IN MX 10 mx\nmx IN CNAME srv\nsrv IN A 127.0.0.1\n_${p}._tcp.srv IN TLSA 2 0 1 ${caHash}`,
      },
      zone("nostarttls", `3 1 1 ${spki}`),
      { name: "nostarttls-pkix.test", records: "@ IN MX 10 mx\nmx IN A 127.0.0.1" },
      // Signed MX pointing into an unsigned zone: the address is insecure, so no DANE (wrong TLSA unused).
      { name: "mixed.test", signed: true, records: "@ IN MX 10 mx.unsigned.test." },
      {
        name: "unsigned.test",
        records: `mx IN A 127.0.0.1\n_${p}._tcp.mx IN TLSA 3 1 1 ${"00".repeat(32)}`,
      },
    ],
  });
  const fingerDir = await fingerConfigDir();
  return {
    unboundPort: unbound.port,
    resolverIp,
    postfixPort: p,
    badnamePort,
    noTlsPort,
    postfixLog: async (needle) =>
      (await Deno.readTextFile(`${postfix.dir}/maillog`).catch(() => "")).split("\n").filter((l) =>
        l.includes(needle)
      ),
    stripPort: strip.port,
    stripMessages: () => strip.messages.length,
    postfixHeld: () => postfix.heldCount(),
    fingerDir,
    caFile: pki.certFile,
    async stop() {
      await strip.stop();
      await postfix.stop().catch(() => {});
      await unbound.stop();
      await pki.cleanup();
      await Deno.remove(fingerDir, { recursive: true }).catch(() => {});
    },
  };
}

type Outcome = DaneOutcome;

/**
 * Sends one message to user@`domain` through a Ferry that trusts unbound's AD bit; returns its outcome.
 * `routes` come before the test's own (MX routing to Postfix's listeners).
 */
function send(
  r: Rig,
  domain: string,
  delivery: Record<string, unknown> = {},
  routes: NonNullable<FerryConfig["routes"]> = [],
): Promise<Outcome> {
  return sendOne({
    routes: [
      ...routes,
      { domains: "strip.test", mx: true, port: r.stripPort },
      { domains: "ta-badname.test", mx: true, port: r.badnamePort },
      { domains: ["nostarttls.test", "nostarttls-pkix.test"], mx: true, port: r.noTlsPort },
      { domains: "*", mx: true, port: r.postfixPort },
    ],
    delivery: { enable: true, ...delivery },
    dns: { nameservers: [{ address: "127.0.0.1", port: r.unboundPort }] },
  }, domain);
}

/** Runs `fn` and counts the Postfix log lines saying a client sent `name` as SNI meanwhile. */
async function sniSent(
  r: Rig,
  name: string,
  fn: () => Promise<Outcome>,
): Promise<{ outcome: Outcome; lines: number }> {
  const needle = `TLS SNI ${name} from `;
  const before = (await r.postfixLog(needle)).length;
  const outcome = await fn();
  // Postfix logs the SNI during the handshake, but through postlogd, which may write it a little later.
  await waitFor(
    async () => (await r.postfixLog(needle)).length > before,
    10_000,
    `Postfix's "${needle}" line`,
  )
    .catch(() => {});
  return { outcome, lines: (await r.postfixLog(needle)).length - before };
}

/**
 * Runs `fn` and returns the summary line Postfix's `listener` logged for the SMTP session it had meanwhile
 * (`disconnect from … ehlo=1 quit=1 commands=2`: the commands it received), waiting for it to be written.
 * `then` runs next, inside the same window, for one more session on that listener (posttls-finger's): its
 * line is waited for too, so it cannot land after the next case has counted the lines before its own.
 */
async function withSession<T = undefined>(
  r: Rig,
  listener: string,
  fn: () => Promise<Outcome>,
  then?: (o: Outcome) => Promise<T>,
): Promise<{ outcome: Outcome; session: string; then?: T }> {
  const sessions = async () =>
    (await r.postfixLog(`postfix-${listener}/smtpd[`)).filter((l) => / disconnect from .*ehlo=/.test(l));
  const before = (await sessions()).length;
  const outcome = await fn();
  const more = then ? await then(outcome) : undefined;
  let session = "";
  await waitFor(
    async () => {
      const all = await sessions();
      session = all[before] ?? "";
      return all.length >= before + (then ? 2 : 1);
    },
    10_000,
    `${then ? "two session summaries" : "a session summary"} from Postfix's ${listener} listener`,
  );
  return { outcome, session, then: more };
}

const cases: RigCase<Rig>[] = [
  {
    name: "TLSA 3 1 1 matching the server's key: delivered with CV=dane TLS=dane(3); posttls-finger agrees",
    async fn(r) {
      const o = await send(r, "good.test");
      const pf = await sideBySide(r, "good.test", r.postfixPort, o);
      assert.equal(o.kind, "=>", o.line);
      assert.match(o.line, / H=mx\.good\.test \[127\.0\.0\.1\]:\d+ X=TLS1\.[23]:\S+ CV=dane TLS=dane\(3\) /);
      assert.equal(o.delivery?.tls?.dane, true);
      assert.equal(o.delivery?.tls?.tlsaUsage, 3);
      assert.deepEqual(o.delivery?.security, {
        policy: "dane",
        tlsRequired: "authenticated",
        mxRequired: "none",
        requiredBy: "dane",
        tlsaUsage: 3,
      });
      assert.equal(pf, "verified");
    },
  },
  {
    name:
      "TLSA 3 1 1 that matches nothing: deferred (never clear, never PKIX), dane:fail; posttls-finger fails",
    async fn(r) {
      const held = await r.postfixHeld();
      const o = await send(r, "wrong.test");
      const pf = await sideBySide(r, "wrong.test", r.postfixPort, o);
      assert.equal(o.kind, "==", o.line);
      assert.match(o.line, / TLS=dane: dane: certificate verification failed/);
      assert.equal(o.defer?.errno, "TLS");
      assert.equal(o.daneFail, 1);
      assert.equal(await r.postfixHeld(), held, "nothing reached the MX");
      // posttls-finger reports rather than aborts: "Untrusted" is its word for a DANE match that failed.
      assert.equal(pf, "untrusted");
    },
  },
  {
    name:
      "TLSA 2 0 1 on the test CA with the MX name in the certificate: CV=dane TLS=dane(2); posttls-finger agrees",
    async fn(r) {
      const sni = await sniSent(r, "mx.ta.test", () => send(r, "ta.test"));
      const o = sni.outcome;
      const pf = await sideBySide(r, "ta.test", r.postfixPort, o);
      assert.equal(o.kind, "=>", o.line);
      assert.match(o.line, / CV=dane TLS=dane\(2\) /);
      assert.equal(sni.lines, 1, "Ferry sent the TLSA base domain as SNI");
      assert.equal(pf, "verified");
    },
  },
  {
    name:
      "TLSA 2 0 1 on the test CA but a certificate naming neither the MX host nor the TLSA base domain: " +
      "deferred (never clear, never PKIX), dane:fail; posttls-finger fails",
    async fn(r) {
      const held = await r.postfixHeld();
      const sni = await sniSent(r, "mx.ta-badname.test", () => send(r, "ta-badname.test"));
      const o = sni.outcome;
      const pf = await sideBySide(r, "ta-badname.test", r.badnamePort, o);
      assert.equal(o.kind, "==", o.line);
      assert.match(o.line, / TLS=dane: dane: certificate verification failed/);
      assert.equal(o.defer?.errno, "TLS");
      assert.equal(o.daneFail, 1);
      assert.equal(o.queued, 1, "the message stays queued");
      assert.equal(sni.lines, 1, "the handshake was made, with the TLSA base domain as SNI");
      assert.equal(await r.postfixHeld(), held, "nothing reached the MX");
      assert.equal(pf, "untrusted");
    },
  },
  {
    name:
      "a secure CNAME for the MX host: TLSA at the alias's target, which is also the SNI; CV=dane TLS=dane(2)",
    async fn(r) {
      const sni = await sniSent(r, "srv.ta-alias.test", () => send(r, "ta-alias.test"));
      const o = sni.outcome;
      const pf = await sideBySide(r, "ta-alias.test", r.postfixPort, o);
      assert.equal(o.kind, "=>", o.line);
      assert.match(o.line, / H=mx\.ta-alias\.test \[127\.0\.0\.1\]:\d+ .*CV=dane TLS=dane\(2\) /);
      assert.equal(sni.lines, 1, "SNI is the TLSA base domain srv.ta-alias.test, not the MX name");
      assert.equal(pf, "verified");
    },
  },
  {
    name:
      "route-configured hosts: DANE applies when the host's own address is secure, not when it is insecure",
    async fn(r) {
      const held = await r.postfixHeld();
      const via = (
        host: string,
      ) => [{ domains: ["good.test", "wrong.test"], hosts: [host], port: r.postfixPort }];
      // The recipient domain's own (right) TLSA is irrelevant: the route's host is what is authenticated.
      const wrong = await send(r, "good.test", {}, via("mx.wrong.test"));
      assert.equal(wrong.kind, "==", wrong.line);
      assert.match(wrong.line, / H=mx\.wrong\.test .*TLS=dane: dane: certificate verification failed/);
      assert.equal(wrong.daneFail, 1);
      assert.equal(await r.postfixHeld(), held, "nothing reached the host");
      const good = await send(r, "wrong.test", {}, via("mx.good.test"));
      assert.equal(good.kind, "=>", good.line);
      assert.match(good.line, / H=mx\.good\.test .*CV=dane TLS=dane\(3\) /);
      // mx.unsigned.test has a wrong TLSA, but its address answer is insecure: no DANE.
      const insecure = await send(r, "good.test", {}, via("mx.unsigned.test"));
      assert.equal(insecure.kind, "=>", insecure.line);
      assert.match(insecure.line, / H=mx\.unsigned\.test .*TLS=opportunistic /);
      assert.equal(insecure.daneFail, 0);
    },
  },
  {
    name: "an unsigned zone: TLSA ignored, PKIX when the CA is trusted, else opportunistic",
    async fn(r) {
      const o = await send(r, "plain.test");
      const pf = await sideBySide(r, "plain.test", r.postfixPort, o);
      assert.equal(o.kind, "=>", o.line);
      assert.match(o.line, / CV=no TLS=opportunistic /);
      assert.equal(pf, "untrusted");
      const pkix = await send(r, "plain.test", { tlsVerifyCertificates: r.caFile });
      assert.equal(pkix.kind, "=>", pkix.line);
      assert.match(pkix.line, / CV=yes TLS=pkix /);
    },
  },
  {
    name: "a bogus signature (SERVFAIL from the validator): deferred, nothing sent",
    async fn(r) {
      const held = await r.postfixHeld();
      const o = await send(r, "bogus.test");
      const pf = await sideBySide(r, "bogus.test", r.postfixPort, o);
      assert.equal(o.kind, "==", o.line);
      assert.match(o.line, /SERVFAIL|DNS lookup/);
      assert.equal(await r.postfixHeld(), held);
      assert.doesNotMatch(pf, /^verified|^untrusted|^anonymous|^trusted/);
    },
  },
  {
    name: "MX secure but the MX host's address insecure: no DANE (its wrong TLSA is not used)",
    async fn(r) {
      const o = await send(r, "mixed.test");
      const pf = await sideBySide(r, "mixed.test", r.postfixPort, o);
      assert.equal(o.kind, "=>", o.line);
      assert.match(o.line, / H=mx\.unsigned\.test .* TLS=opportunistic /);
      assert.equal(pf, "untrusted");
    },
  },
  {
    name: "a MX that does not offer STARTTLS while DANE requires it: deferred, nothing sent in clear",
    async fn(r) {
      const o = await send(r, "strip.test");
      const pf = await sideBySide(r, "strip.test", r.stripPort, o);
      assert.equal(o.kind, "==", o.line);
      assert.match(o.line, / TLS=dane: dane: TLS required but STARTTLS not offered/);
      assert.equal(r.stripMessages(), 0);
      assert.doesNotMatch(pf, /^verified/);
    },
  },
  {
    name: "a real Postfix without STARTTLS while a signed TLSA requires DANE: deferred, still queued, " +
      "Postfix received nothing",
    async fn(r) {
      const { outcome: o, session, then: pf } = await withSession(
        r,
        "nostarttls",
        () => send(r, "nostarttls.test"),
        (o) => sideBySide(r, "nostarttls.test", r.noTlsPort, o),
      );
      assert.equal(o.kind, "==", o.line);
      assert.match(o.line, / H=mx\.nostarttls\.test .*TLS=dane: dane: TLS required but STARTTLS not offered/);
      assert.equal(o.queued, 1, "the message stays queued");
      assert.match(session, /ehlo=1/, "Ferry met the peer");
      assert.doesNotMatch(session, /mail=|rcpt=|data=|bdat=/, "no transaction was started in clear");
      assert.equal(pf, "no-starttls");
    },
  },
  {
    name: "a real Postfix without STARTTLS while tlsVerifyHosts requires TLS (unsigned zone): deferred, " +
      "still queued, Postfix received nothing",
    async fn(r) {
      const { outcome: o, session } = await withSession(
        r,
        "nostarttls",
        () => send(r, "nostarttls-pkix.test", { tlsVerifyHosts: "*", tlsVerifyCertificates: r.caFile }),
      );
      assert.equal(o.kind, "==", o.line);
      assert.match(o.line, / TLS=pkix: tlsVerifyHosts: TLS required but STARTTLS not offered/);
      assert.equal(o.defer?.security?.requiredBy, "tlsVerifyHosts");
      assert.equal(o.queued, 1, "the message stays queued");
      assert.match(session, /ehlo=1/, "Ferry met the peer");
      assert.doesNotMatch(session, /mail=|rcpt=|data=|bdat=/, "no transaction was started in clear");
    },
  },
  {
    name: "hostsRequireDane on an unsigned domain: deferred, naming the reason",
    async fn(r) {
      const o = await send(r, "plain.test", { hostsRequireDane: "*" });
      assert.equal(o.kind, "==", o.line);
      assert.match(o.line, /dane: required but the MX answer for plain\.test is not DNSSEC-validated/);
    },
  },
  {
    name: "hostsTryDane empty: the wrong TLSA is not consulted and the message goes opportunistically",
    async fn(r) {
      const o = await send(r, "wrong.test", { hostsTryDane: [] });
      assert.equal(o.kind, "=>", o.line);
      assert.match(o.line, / TLS=opportunistic /);
    },
  },
  {
    name: "dnssecRequireDomains on an unsigned domain: deferred; on a signed one: delivered",
    async fn(r) {
      const bad = await send(r, "plain.test", { dnssecRequireDomains: "*" });
      assert.equal(bad.kind, "==", bad.line);
      assert.match(bad.line, /dnssecRequireDomains: MX of plain\.test is not DNSSEC-validated/);
      const good = await send(r, "good.test", { dnssecRequireDomains: "*" });
      assert.equal(good.kind, "=>", good.line);
    },
  },
  {
    name:
      "a DANE failure of one domain puts no back-off on the MX host: domains sharing it are delivered at once",
    async fn(r) {
      // One Ferry for all: back-off lives in its memory. wrong.test's TLSA matches nothing and nostarttls.test
      // has TLSA records for a host without STARTTLS; good.test and nostarttls-pkix.test use the same hosts.
      const up = await startFerryIn({
        routes: [
          { domains: ["nostarttls.test", "nostarttls-pkix.test"], mx: true, port: r.noTlsPort },
          { domains: "*", mx: true, port: r.postfixPort },
        ],
        delivery: { enable: true },
        dns: { nameservers: [{ address: "127.0.0.1", port: r.unboundPort }] },
      });
      try {
        const outcomes = () => [...linesOf(up.memlog, "=>"), ...linesOf(up.memlog, "==")];
        for (const [i, [refused, fine]] of [["wrong", "good"], ["nostarttls", "nostarttls-pkix"]].entries()) {
          await submit(up.port, [`user@${refused}.test`]);
          await waitFor(() => outcomes().length === 2 * i + 1, 15_000, `an outcome for ${refused}.test`);
          assert.match(outcomes().at(-1)!, new RegExp(`^== user@${refused}\\.test .*TLS=dane: dane: `));
          await submit(up.port, [`user@${fine}.test`]);
          await waitFor(() => outcomes().length === 2 * i + 2, 15_000, `an outcome for ${fine}.test`);
        }
        const delivered = linesOf(up.memlog, "=>");
        assert.equal(delivered.length, 2, outcomes().join("\n"));
        assert.match(delivered[0], /^=> user@good\.test .* CV=dane TLS=dane\(3\) /);
        assert.match(delivered[1], /^=> user@nostarttls-pkix\.test .* TLS=none /);
      } finally {
        await up.dispose();
      }
    },
  },
];

testsOnSharedRig("DANE", startRig, cases);
