/**
 * DANE (RFC 7672) against real peers: unbound validating DNSSEC-signed test zones, Postfix smtpd with a
 * test-CA certificate as the receiving MX, and Postfix's own DANE client `posttls-finger -l dane` as a
 * second opinion printed next to Ferry's verdict for every case.
 */
import assert from "node:assert/strict";
import { startPostfix } from "../../bench/_postfix.ts";
import type { FerryEvents } from "../../src/events/types.ts";
import { linesOf, startDownstream, startFerryIn, submit, waitFor } from "../helpers/downstream.ts";
import { fingerConfigDir, postfixVerdict, sha256Hex, spkiDer } from "../helpers/dane.ts";
import { createPki } from "../helpers/pki.ts";
import { startUnbound, type TestZone } from "../helpers/unbound.ts";

interface Rig {
  unboundPort: number;
  resolverIp: string;
  postfixPort: number;
  stripPort: number;
  stripMessages: () => number;
  postfixHeld: () => Promise<number>;
  fingerDir: string;
  /** The test CA's certificate (PEM file) */
  caFile: string;
  stop(): Promise<void>;
}

let rigPromise: Promise<Rig> | undefined;

/** One unbound, one Postfix, one STARTTLS-less peer for every case (built once, stopped by the last test). */
function rig(): Promise<Rig> {
  return rigPromise ??= (async () => {
    const pki = await createPki();
    const names = ["good", "wrong", "ta", "plain", "bogus", "strip"].map((z) => `mx.${z}.test`);
    const leaf = await pki.issue({ cn: "mx.good.test", dns: [...names, "mx.unsigned.test"] });
    // DANE-TA(2) needs the trust anchor in the chain the server sends: leaf + the test root.
    const served = `${pki.dir}/served-chain.pem`;
    await Deno.writeTextFile(
      served,
      (await Deno.readTextFile(leaf.chainFile)) + (await Deno.readTextFile(pki.certFile)),
    );
    const postfix = await startPostfix({
      domain: "good.test",
      moreDomains: ["wrong.test", "ta.test", "plain.test", "bogus.test", "mixed.test", "strip.test"],
      tls: { certFile: served, keyFile: leaf.keyFile },
    });
    const strip = startDownstream();
    const spki = await sha256Hex(await spkiDer(leaf.certFile));
    const caHash = await sha256Hex(pki.der);
    const p = postfix.port;
    const zone = (name: string, tlsa: string, extra: Partial<TestZone> = {}): TestZone => ({
      name: `${name}.test`,
      signed: true,
      records: [
        "@ IN MX 10 mx",
        "mx IN A 127.0.0.1",
        `_${name === "strip" ? strip.port : p}._tcp.mx IN TLSA ${tlsa}`,
      ].join("\n"),
      ...extra,
    });
    const resolverIp = `127.53.${Math.floor(Math.random() * 200) + 20}.${
      Math.floor(Math.random() * 200) + 20
    }`;
    const unbound = await startUnbound({
      extraInterfaces: [`${resolverIp}@53`],
      zones: [
        zone("good", `3 1 1 ${spki}`),
        zone("wrong", `3 1 1 ${"00".repeat(32)}`),
        zone("ta", `2 0 1 ${caHash}`),
        zone("plain", `3 1 1 ${"00".repeat(32)}`, { signed: false }),
        zone("bogus", `3 1 1 ${spki}`, { bogus: true }),
        zone("strip", `3 1 1 ${spki}`),
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
  })();
}

interface Outcome {
  line: string;
  kind: "=>" | "==";
  delivery?: FerryEvents["msg:delivery"];
  defer?: FerryEvents["msg:host:defer"];
  daneFail: number;
}

/** Sends one message to user@`domain` through a Ferry that trusts unbound's AD bit; returns its outcome. */
async function send(r: Rig, domain: string, delivery: Record<string, unknown> = {}): Promise<Outcome> {
  const seen: Omit<Outcome, "line" | "kind"> = { daneFail: 0 };
  const up = await startFerryIn({
    routes: [
      { domains: "strip.test", mx: true, port: r.stripPort },
      { domains: "*", mx: true, port: r.postfixPort },
    ],
    delivery: { enable: true, ...delivery },
    dns: { nameservers: [{ address: "127.0.0.1", port: r.unboundPort }] },
    events: {
      "msg:delivery": (p) => void (seen.delivery = p),
      "msg:host:defer": (p) => void (seen.defer ??= p),
      "dane:fail": () => void seen.daneFail++,
    },
  });
  try {
    await submit(up.port, [`user@${domain}`]);
    await waitFor(
      () => linesOf(up.memlog, "=>").length + linesOf(up.memlog, "==").length > 0,
      15_000,
      `an outcome for ${domain}`,
    );
    const [ok] = linesOf(up.memlog, "=>");
    return { ...seen, line: ok ?? linesOf(up.memlog, "==")[0], kind: ok ? "=>" : "==" };
  } finally {
    await up.dispose();
  }
}

async function sideBySide(r: Rig, domain: string, port: number, ferry: Outcome): Promise<string> {
  const pf = await postfixVerdict(domain, port, r.resolverIp, r.fingerDir);
  console.log(`${domain.padEnd(12)} Ferry: ${ferry.line.replace(/ C=".*$/, "").slice(0, 150)}`);
  console.log(`${"".padEnd(12)} posttls-finger -l dane: ${pf}`);
  return pf;
}

const cases: { name: string; fn: (r: Rig) => Promise<void> }[] = [
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
      const o = await send(r, "ta.test");
      const pf = await sideBySide(r, "ta.test", r.postfixPort, o);
      assert.equal(o.kind, "=>", o.line);
      assert.match(o.line, / CV=dane TLS=dane\(2\) /);
      assert.equal(pf, "verified");
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
];

let remaining = cases.length;
for (const c of cases) {
  Deno.test({
    name: `DANE: ${c.name}`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const r = await rig();
      try {
        await c.fn(r);
      } finally {
        if (--remaining === 0) await r.stop();
      }
    },
  });
}
