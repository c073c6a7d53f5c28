/**
 * MTA-STS (RFC 8461) against real peers: TXT records from unbound, policies served by nginx over HTTPS with a
 * test-CA certificate, a downstream Ferry with STARTTLS as every MX. Policies that must be rejected (wrong
 * content type, redirect, oversized, expired certificate) all carry an enforce policy whose mx does not match,
 * so accepting one by mistake would defer the message.
 */
import assert from "node:assert/strict";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import type { FerryEvents } from "../../src/events/types.ts";
import { firstOutcome, linesOf, startFerryIn, submit, waitFor } from "../helpers/downstream.ts";
import { startTestFerry, type TestFerry } from "../helpers/ferry.ts";
import { startNginx } from "../helpers/nginx.ts";
import { createPki, ferryTls, type TestPki } from "../helpers/pki.ts";
import { type RigCase, testsOnSharedRig } from "../helpers/shared_rig.ts";
import { startUnbound } from "../helpers/unbound.ts";

const GOOD = (mx: string, mode = "enforce") => `version: STSv1\nmode: ${mode}\nmx: ${mx}\nmax_age: 86400\n`;
const DOMAINS = [
  "enforce",
  "testing",
  "nomatch",
  "twomx",
  "wrongtype",
  "redirect",
  "big",
  "expired",
  "wrongname",
  "plain",
];

interface Rig {
  pki: TestPki;
  unboundPort: number;
  nginxPort: number;
  down: TestFerry;
  stop(): Promise<void>;
}

/** The peers every case shares (see testsOnSharedRig). */
async function startRig(): Promise<Rig> {
  const pki = await createPki();
  const mxNames = DOMAINS.flatMap((d) => [`mx.${d}.test`, `mx1.${d}.test`]);
  const smtpLeaf = await pki.issue({ cn: "mx.enforce.test", dns: mxNames });
  const down = await startTestFerry({
    relay: { domains: "*", clients: ["127.0.0.0/8"] },
    tls: ferryTls(smtpLeaf),
  });
  const web = await pki.issue({
    cn: "mta-sts",
    dns: DOMAINS.filter((d) => d !== "wrongname").map((d) => `mta-sts.${d}.test`),
  });
  // Valid and from the trusted CA, but for another name than mta-sts.wrongname.test.
  const wrongName = await pki.issue({ cn: "mta-sts.elsewhere.test", dns: ["mta-sts.elsewhere.test"] });
  const expired = await pki.issue({
    cn: "mta-sts.expired.test",
    dns: ["mta-sts.expired.test"],
    startDate: "20200101000000Z",
    endDate: "20210101000000Z",
  });
  const site = (d: string, extra: Record<string, unknown> = {}) => ({
    host: `mta-sts.${d}.test`,
    certFile: web.chainFile,
    keyFile: web.keyFile,
    ...extra,
  });
  const nginx = await startNginx([
    site("enforce", { body: GOOD("mx.enforce.test") }),
    site("testing", { body: GOOD("mx.testing.test", "testing") }),
    site("nomatch", { body: GOOD("other.nomatch.test") }),
    site("twomx", { body: GOOD("mx.twomx.test") }),
    site("wrongtype", { body: GOOD("nothing.test"), contentType: "text/html" }),
    site("redirect", { redirectTo: "https://mta-sts.enforce.test/.well-known/mta-sts.txt" }),
    site("big", { body: GOOD("nothing.test") + "#".repeat(70 * 1024) + "\n" }),
    site("expired", { body: GOOD("nothing.test"), certFile: expired.chainFile, keyFile: expired.keyFile }),
    site("wrongname", {
      body: GOOD("nothing.test"),
      certFile: wrongName.chainFile,
      keyFile: wrongName.keyFile,
    }),
  ]);
  const unbound = await startUnbound({
    zones: DOMAINS.map((d) => ({
      name: `${d}.test`,
      records: [
        d === "twomx"
          ? "@ IN MX 10 mx1\n@ IN MX 20 mx"
          : d === "plain"
          ? "@ IN MX 10 mx.enforce.test."
          : "@ IN MX 10 mx",
        "mx IN A 127.0.0.1",
        "mx1 IN A 127.0.0.1",
        "mta-sts IN A 127.0.0.1",
        d === "plain" ? "" : `_mta-sts IN TXT "v=STSv1; id=20261206"`,
      ].join("\n"),
    })),
  });
  return {
    pki,
    unboundPort: unbound.port,
    nginxPort: nginx.port,
    down,
    async stop() {
      await down.stop();
      await Deno.remove(down.dir, { recursive: true }).catch(() => {});
      await nginx.stop();
      await unbound.stop();
      await pki.cleanup();
    },
  };
}

interface Result {
  lines: string[];
  deliveries: FerryEvents["msg:delivery"][];
  log: string[];
}

/** Submits one message to `rcpts` and waits until each has an outcome. */
async function send(
  r: Rig,
  rcpts: string[],
  opts: { trustCa?: boolean; dir?: string } = {},
): Promise<Result> {
  const deliveries: FerryEvents["msg:delivery"][] = [];
  const up = await startFerryIn({
    routes: [{ domains: "*", mx: true, port: r.down.port }],
    delivery: {
      enable: true,
      ...(opts.trustCa === false ? {} : { tlsVerifyCertificates: r.pki.certFile }),
      mtaSts: { port: r.nginxPort, caFile: r.pki.certFile, timeout: "5s" },
    },
    dns: { nameservers: [{ address: "127.0.0.1", port: r.unboundPort }] },
    events: { "msg:delivery": (p) => void deliveries.push(p) },
  }, { dir: opts.dir });
  try {
    await submit(up.port, rcpts);
    await waitFor(
      () => linesOf(up.memlog, "=>").length + linesOf(up.memlog, "==").length >= rcpts.length,
      15_000,
      "an outcome for every recipient",
    );
    return {
      lines: [...linesOf(up.memlog, "=>"), ...linesOf(up.memlog, "==")],
      deliveries,
      log: up.memlog.lines.map((l) => l.text),
    };
  } finally {
    if (opts.dir) await up.stop();
    else await up.dispose();
  }
}

const cases: RigCase<Rig>[] = [
  {
    name: "enforce with a matching MX and a PKIX-valid certificate: TLS=mta-sts(enforce), CV=yes",
    async fn(r) {
      const { lines, deliveries } = await send(r, ["user@enforce.test"]);
      assert.match(
        lines[0],
        /^=> user@enforce\.test .* H=mx\.enforce\.test .* CV=yes TLS=mta-sts\(enforce\) /,
      );
      assert.deepEqual(deliveries[0].security, {
        policy: "mta-sts(enforce)",
        tlsRequired: "authenticated",
        mxRequired: "mta-sts",
        requiredBy: "mta-sts",
      });
    },
  },
  {
    name: "enforce when the MX certificate is not trusted: deferred, never delivered opportunistically",
    async fn(r) {
      const { lines } = await send(r, ["user@enforce.test"], { trustCa: false });
      assert.match(
        lines[0],
        /^== user@enforce\.test .* TLS=mta-sts\(enforce\): mta-sts: certificate verification/,
      );
    },
  },
  {
    name: "testing: an untrusted certificate still delivers (reported only)",
    async fn(r) {
      const { lines } = await send(r, ["user@testing.test"], { trustCa: false });
      assert.match(lines[0], /^=> user@testing\.test .* CV=no TLS=opportunistic /);
      const trusted = await send(r, ["user@testing.test"]);
      assert.match(trusted.lines[0], / CV=yes TLS=mta-sts\(testing\) /);
    },
  },
  {
    name: "enforce with no matching MX: deferred naming the policy, nothing sent",
    async fn(r) {
      const before = await r.down.spool.count();
      const { lines } = await send(r, ["user@nomatch.test"]);
      assert.match(
        lines[0],
        /^== user@nomatch\.test .*mta-sts: mx\.nomatch\.test is not in the policy of nomatch\.test/,
      );
      assert.equal(await r.down.spool.count(), before);
    },
  },
  {
    name: "enforce skips the MX host that is not in the policy and uses the one that is",
    async fn(r) {
      const { lines } = await send(r, ["user@twomx.test"]);
      assert.match(lines[0], /^=> user@twomx\.test .* H=mx\.twomx\.test .* TLS=mta-sts\(enforce\) /);
    },
  },
  ...([
    ["wrongtype", /sts-policy-invalid: content type "text\/html"/],
    ["redirect", /sts-policy-fetch-error: HTTP status 301/],
    ["big", /sts-policy-invalid: policy from mta-sts\.big\.test is larger than 64 KiB/],
    ["expired", /sts-webpki-invalid: certificate of mta-sts\.expired\.test not valid/],
    ["wrongname", /sts-webpki-invalid: certificate of mta-sts\.wrongname\.test not valid/],
  ] as const).map(([d, why]) => ({
    name: `a policy that must be refused (${d}) is not applied, and the failure is logged`,
    async fn(r: Rig) {
      const { lines, log } = await send(r, [`user@${d}.test`]);
      assert.match(lines[0], new RegExp(`^=> user@${d}\\.test .* TLS=pkix `));
      assert.ok(log.some((l) => l.startsWith(`mta-sts: ${d}.test: `) && why.test(l)), log.join("\n"));
    },
  })),
  {
    name: "no leak between domains sharing a MX: enforce defers, the domain without a policy delivers",
    async fn(r) {
      // plain.test has no policy and the same MX host as enforce.test (one pooled destination).
      const { lines } = await send(r, ["a@plain.test", "b@enforce.test"], { trustCa: false });
      const plain = lines.find((l) => l.includes("a@plain.test"));
      const enforce = lines.find((l) => l.includes("b@enforce.test"));
      assert.match(plain ?? "", /^=> a@plain\.test .* TLS=opportunistic /);
      assert.match(enforce ?? "", /^== b@enforce\.test .* TLS=mta-sts\(enforce\)/);
    },
  },
];

testsOnSharedRig("MTA-STS", startRig, cases);

Deno.test("MTA-STS: the policy cache survives a restart, and a new TXT id refetches", async () => {
  const pki = await createPki();
  const smtpLeaf = await pki.issue({ cn: "mx.cache.test", dns: ["mx.cache.test"] });
  const web = await pki.issue({ cn: "mta-sts.cache.test", dns: ["mta-sts.cache.test"] });
  const down = await startTestFerry({
    relay: { domains: "*", clients: ["127.0.0.0/8"] },
    tls: ferryTls(smtpLeaf),
  });
  const nginx = await startNginx([{
    host: "mta-sts.cache.test",
    certFile: web.chainFile,
    keyFile: web.keyFile,
    body: GOOD("mx.cache.test"),
  }]);
  const resolver = new MemoryResolver({
    records: {
      "cache.test": { MX: [{ preference: 10, exchange: "mx.cache.test" }] },
      "mx.cache.test": { A: ["127.0.0.1"] },
      "mta-sts.cache.test": { A: ["127.0.0.1"] },
      "_mta-sts.cache.test": { TXT: ["v=STSv1; id=one"] },
    },
  });
  const dir = await Deno.makeTempDir({ prefix: "ferry-sts-cache-" });
  const once = async () => {
    const up = await startFerryIn({
      routes: [{ domains: "*", mx: true, port: down.port }],
      delivery: {
        enable: true,
        tlsVerifyCertificates: pki.certFile,
        mtaSts: { port: nginx.port, caFile: pki.certFile },
      },
    }, { dir, resolver });
    try {
      await submit(up.port, ["user@cache.test"]);
      return await firstOutcome(up.memlog, 10_000);
    } finally {
      await up.stop();
    }
  };
  try {
    assert.match(await once(), /^=> .* TLS=mta-sts\(enforce\) /);
    const cached = JSON.parse(await Deno.readTextFile(`${dir}/spool/mta-sts-cache.json`));
    assert.equal(cached["cache.test"].id, "one");
    // The server now publishes a policy that excludes the MX, under the same id: the cached one stays in force.
    await nginx.setBody("mta-sts.cache.test", GOOD("elsewhere.cache.test"));
    assert.match(await once(), /^=> .* TLS=mta-sts\(enforce\) /, "after a restart, from the cache");
    // A new id makes Ferry fetch again: now the MX is not in the policy.
    resolver.set("_mta-sts.cache.test", "TXT", ["v=STSv1; id=two"]);
    assert.match(await once(), /^== .*mta-sts: mx\.cache\.test is not in the policy of cache\.test/);
    // mode none under a new id: the enforce policy is forgotten (the MX it excluded gets the mail), also
    // after a restart.
    await nginx.setBody("mta-sts.cache.test", GOOD("elsewhere.cache.test", "none"));
    resolver.set("_mta-sts.cache.test", "TXT", ["v=STSv1; id=three"]);
    assert.match(await once(), /^=> user@cache\.test .* H=mx\.cache\.test .* TLS=pkix /);
    const forgotten = JSON.parse(await Deno.readTextFile(`${dir}/spool/mta-sts-cache.json`));
    assert.equal(forgotten["cache.test"].id, "three");
    assert.equal(forgotten["cache.test"].policy.mode, "none");
    assert.match(await once(), /^=> user@cache\.test .* TLS=pkix /, "after a restart");
  } finally {
    await nginx.stop();
    await down.stop();
    await Deno.remove(down.dir, { recursive: true }).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await pki.cleanup();
  }
});

Deno.test("MTA-STS: a new id whose policy host answers 500: the cached policy stays in force, one fetch for N messages", async () => {
  const pki = await createPki();
  const smtpLeaf = await pki.issue({ cn: "mx.fail.test", dns: ["mx.fail.test", "mx1.fail.test"] });
  const web = await pki.issue({ cn: "mta-sts.fail.test", dns: ["mta-sts.fail.test"] });
  const down = await startTestFerry({
    relay: { domains: "*", clients: ["127.0.0.0/8"] },
    tls: ferryTls(smtpLeaf),
  });
  const nginx = await startNginx([{
    host: "mta-sts.fail.test",
    certFile: web.chainFile,
    keyFile: web.keyFile,
    status: 500,
  }]);
  // mx1 is preferred but not in the cached policy: only enforce makes Ferry skip it.
  const resolver = new MemoryResolver({
    records: {
      "fail.test": {
        MX: [{ preference: 10, exchange: "mx1.fail.test" }, { preference: 20, exchange: "mx.fail.test" }],
      },
      "mx.fail.test": { A: ["127.0.0.1"] },
      "mx1.fail.test": { A: ["127.0.0.1"] },
      "mta-sts.fail.test": { A: ["127.0.0.1"] },
      "_mta-sts.fail.test": { TXT: ["v=STSv1; id=new"] },
    },
  });
  const dir = await Deno.makeTempDir({ prefix: "ferry-sts-fail-" });
  await Deno.mkdir(`${dir}/spool`, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/spool/mta-sts-cache.json`,
    JSON.stringify({
      "fail.test": {
        id: "old",
        policy: { mode: "enforce", mx: ["mx.fail.test"], maxAge: 86400 },
        fetchedAt: Date.now(),
      },
    }),
  );
  const up = await startFerryIn({
    routes: [{ domains: "*", mx: true, port: down.port }],
    delivery: {
      enable: true,
      tlsVerifyCertificates: pki.certFile,
      mtaSts: { port: nginx.port, caFile: pki.certFile },
    },
  }, { dir, resolver });
  const n = 5;
  try {
    await Promise.all(Array.from({ length: n }, (_, i) => submit(up.port, [`user${i}@fail.test`])));
    await waitFor(
      () => linesOf(up.memlog, "=>").length + linesOf(up.memlog, "==").length >= n,
      20_000,
      "an outcome for every message",
    );
    const lines = linesOf(up.memlog, "=>");
    assert.equal(lines.length, n, up.memlog.lines.map((l) => l.text).join("\n"));
    for (const l of lines) assert.match(l, / H=mx\.fail\.test .* CV=yes TLS=mta-sts\(enforce\) /);
    assert.equal(await nginx.requests("mta-sts.fail.test"), 1, "one fetch reached nginx");
    const failures = up.memlog.lines.filter((l) => l.text.startsWith("mta-sts: fail.test: "));
    assert.equal(failures.length, 1);
    assert.match(failures[0].text, /sts-policy-fetch-error: HTTP status 500/);
  } finally {
    await up.stop();
    await nginx.stop();
    await down.stop();
    await Deno.remove(down.dir, { recursive: true }).catch(() => {});
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await pki.cleanup();
  }
});
