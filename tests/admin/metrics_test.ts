/**
 * /metrics scraped as Prometheus would: checked by promtool (Debian's prometheus package, unpacked) and parsed
 * by the Python prometheus_client parser; counters move as mail is received, refused, delivered and deferred.
 */

import assert from "node:assert/strict";
import { startAdminFerry, stopFerry, waitFor } from "./_admin.ts";
import { freePort, startSink } from "../helpers/sink.ts";
import { runSwaks, swaksAuthArgs } from "../helpers/peers.ts";
import { createPki, ferryTls } from "../helpers/pki.ts";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import { hashPassword } from "../../src/core/password_hash.ts";
import { startTestFerry } from "../helpers/ferry.ts";
import { loadOpenSsl } from "../../src/tls/mod.ts";
import { reject } from "../../mod.ts";
import { linesOf, startFerryIn, submit } from "../helpers/downstream.ts";
import { startNginx } from "../helpers/nginx.ts";
import { startUnbound } from "../helpers/unbound.ts";
import { tlsPolicyLabel } from "../../src/admin/metrics.ts";

loadOpenSsl();

const PROMTOOL = Deno.env.get("PROMTOOL") ?? "/opt/ferry-tools/prometheus/usr/bin/promtool";

/** promtool's verdict on a scrape: exit code and its complaints. */
async function promtoolCheck(text: string): Promise<{ code: number; out: string }> {
  const child = new Deno.Command(PROMTOOL, {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(text));
  await w.close();
  const o = await child.output();
  const dec = new TextDecoder();
  return { code: o.code, out: dec.decode(o.stdout) + dec.decode(o.stderr) };
}

const PARSE = `
import sys, json
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        key = s.name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items())) + "}"
        out[key] = s.value
print(json.dumps(out))
`;

/** Samples by `name{label="v",…}` (labels sorted), parsed by prometheus_client. */
async function parse(text: string): Promise<Record<string, number>> {
  const child = new Deno.Command("/usr/bin/python3", {
    args: ["-c", PARSE],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(text));
  await w.close();
  const o = await child.output();
  assert.equal(o.code, 0, new TextDecoder().decode(o.stderr));
  return JSON.parse(new TextDecoder().decode(o.stdout));
}

Deno.test("/metrics passes promtool and its counters move as mail is received, refused, delivered and deferred", async () => {
  const sinkPort = await freePort();
  const sink = await startSink(sinkPort);
  const deadPort = await freePort();
  const pki = await createPki();
  const cert = await pki.issue({ cn: "ferry.test", dns: ["ferry.test"] });
  const resolver = new MemoryResolver({ records: { "sink.test": { A: ["127.0.0.1"] } } });
  const g = await startTestFerry({
    relay: { domains: ["example.test", "down.test"], clients: [] },
    tls: ferryTls(cert),
    auth: { users: { alice: await hashPassword("pw", { n: 1024 }) } },
    delivery: { enable: true },
    routes: [
      { name: "down", domains: "down.test", hosts: ["127.0.0.1"], port: deadPort },
      { name: "sink", domains: "*", hosts: ["sink.test"], port: sinkPort },
    ],
    admin: { listen: "127.0.0.1:0" },
    // A check refusing one local part: its verdicts are counted like a rate limit's or a scanner's.
    checks: [{
      name: "no-nobody",
      message: () => ({
        rcpt: (c: { recipient: { local: string } }) =>
          c.recipient.local === "nobody" ? reject("nobody lives here") : undefined,
      }),
    }],
  }, { resolver });
  const scrape = async () => {
    const res = await fetch(`${g.admin!.url}/metrics`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    return await res.text();
  };
  try {
    const first = await scrape();
    const check1 = await promtoolCheck(first);
    assert.equal(check1.code, 0, check1.out);
    const before = await parse(first);
    assert.equal(before['ferry_connections_total{result="accepted"}'] ?? 0, 0);

    const ok = await runSwaks(g.port, ["--tls", "--from", "a@x.test", "--to", "u@example.test"]);
    assert.equal(ok.code, 0, ok.stdout);
    const refused = await runSwaks(g.port, ["--from", "a@x.test", "--to", "v@elsewhere.test"]);
    assert.match(refused.stdout, /550 5\.7\.1/);
    const badAuth = await runSwaks(
      g.port,
      swaksAuthArgs({
        tls: "starttls",
        from: "a@x.test",
        to: "u@example.test",
        mechanism: "PLAIN",
        user: "alice",
        password: "wrong",
      }),
    );
    assert.match(badAuth.stdout, /535 5\.7\.8/);
    const byCheck = await runSwaks(g.port, ["--from", "a@x.test", "--to", "nobody@example.test"]);
    assert.match(byCheck.stdout, /550 5\.7\.1 nobody lives here/);
    const deferred = await runSwaks(g.port, ["--from", "a@x.test", "--to", "w@down.test"]);
    assert.equal(deferred.code, 0, deferred.stdout);
    await waitFor(() => g.memlog.has("Completed"));
    await waitFor(() => g.memlog.has("== w@down.test"));

    const second = await scrape();
    const check2 = await promtoolCheck(second);
    assert.equal(check2.code, 0, check2.out);
    const m = await parse(second);
    assert.equal(m['ferry_connections_total{result="accepted"}'], 5);
    assert.equal(m['ferry_check_verdicts_total{check="no-nobody",stage="rcpt",verdict="reject"}'], 1);
    assert.equal(m['ferry_messages_received_total{auth="false",tls="true"}'], 1);
    assert.equal(m['ferry_messages_received_total{auth="false",tls="false"}'], 1);
    assert.equal(m['ferry_messages_rejected_total{class="5xx",stage="rcpt"}'], 2);
    assert.equal(m['ferry_auth_attempts_total{outcome="failure"}'], 1);
    assert.equal(m['ferry_inbound_tls_handshakes_total{result="ok"}'], 2);
    assert.equal(m['ferry_deliveries_total{outcome="delivered",route="sink"}'], 1);
    assert.equal(m['ferry_deliveries_total{outcome="deferred",route="down"}'], 1);
    assert.equal(m['ferry_delivery_seconds_count{route="sink"}'], 1);
    assert.ok(m['ferry_delivery_seconds_sum{route="sink"}'] > 0);
    assert.equal(m['ferry_outbound_tls_total{cv="none",policy="none"}'], 1, "smtp-sink offers no STARTTLS");
    assert.ok(m['ferry_dns_queries_total{outcome="ok",type="A"}'] >= 1);
    assert.ok(m['ferry_dns_query_seconds_count{type="A"}'] >= 1);
    assert.equal(m["ferry_spool_store_seconds_count{}"], 2);
    assert.ok(m["ferry_spool_commits_total{}"] >= 2);
    assert.ok(m["ferry_spool_commit_writes_total{}"] >= m["ferry_spool_commits_total{}"]);
    // Each group commit is observed once: its latency, and its batch size (the writes it carried).
    const commits = m["ferry_spool_commits_total{}"];
    assert.ok(m["ferry_spool_commit_seconds_count{}"] > (before["ferry_spool_commit_seconds_count{}"] ?? 0));
    assert.equal(m["ferry_spool_commit_seconds_count{}"], commits);
    assert.ok(m["ferry_spool_commit_seconds_sum{}"] > 0);
    assert.equal(m["ferry_spool_commit_batch_size_count{}"], commits);
    assert.equal(m["ferry_spool_commit_batch_size_sum{}"], m["ferry_spool_commit_writes_total{}"]);
    assert.equal(
      (m['ferry_queue_messages{state="incoming"}'] ?? 0) + (m['ferry_queue_messages{state="deferred"}'] ?? 0),
      1,
      "the deferred message is still queued",
    );
    assert.equal(m['ferry_queue_messages{state="hold"}'], 0);
    assert.equal(m["ferry_connections_open{}"], 0);
    // Bounded labels: no address or domain appears anywhere in the scrape.
    assert.doesNotMatch(second, /example\.test|down\.test|elsewhere|x\.test|127\.0\.0\.1/);
  } finally {
    await g.stop();
    await Deno.remove(g.dir, { recursive: true }).catch(() => {});
    await sink.stop();
    await pki.cleanup();
  }
});

Deno.test("/metrics reports the age of a stapled OCSP response per certificate set", async () => {
  const { makeOcspPki } = await import("../helpers/ocsp_pki.ts");
  const pki = await makeOcspPki();
  const leaf = await pki.issue("mx.ferry.test");
  const file = `${pki.dir}/good.der`;
  await Deno.writeFile(file, await pki.respond(leaf));
  const f = await startAdminFerry({
    tls: { certificates: [{ cert: leaf.chain, key: leaf.key, ocsp: { file } }] },
  });
  try {
    const text = await (await fetch(`${f.base}/metrics`)).text();
    const m = await parse(text);
    const age = m['ferry_ocsp_staple_age_seconds{set="0"}'];
    assert.ok(age !== undefined && age >= 0 && age < 3 * 86400, `age ${age}`);
  } finally {
    await stopFerry(f);
    await pki.cleanup();
  }
});

Deno.test("ferry_outbound_tls_total labels MTA-STS deliveries mta-sts (nginx policies, unbound, a STARTTLS peer)", async () => {
  const pki = await createPki();
  const mx = await pki.issue({ cn: "mx.sts.test", dns: ["mx.sts.test", "mx.stsplay.test", "mx.plain.test"] });
  const down = await startTestFerry({
    relay: { domains: "*", clients: ["127.0.0.0/8"] },
    tls: ferryTls(mx),
  });
  const web = await pki.issue({ cn: "mta-sts", dns: ["mta-sts.sts.test", "mta-sts.stsplay.test"] });
  const policy = (d: string, mode: string) => ({
    host: `mta-sts.${d}.test`,
    certFile: web.chainFile,
    keyFile: web.keyFile,
    body: `version: STSv1\nmode: ${mode}\nmx: mx.${d}.test\nmax_age: 86400\n`,
  });
  const nginx = await startNginx([policy("sts", "enforce"), policy("stsplay", "testing")]);
  const unbound = await startUnbound({
    zones: ["sts", "stsplay", "plain"].map((d) => ({
      name: `${d}.test`,
      records: [
        "@ IN MX 10 mx",
        "mx IN A 127.0.0.1",
        "mta-sts IN A 127.0.0.1",
        d === "plain" ? "" : `_mta-sts IN TXT "v=STSv1; id=1"`,
      ].join("\n"),
    })),
  });
  const up = await startFerryIn({
    routes: [{ name: "mx", domains: "*", mx: true, port: down.port }],
    delivery: {
      enable: true,
      tlsVerifyCertificates: pki.certFile,
      mtaSts: { port: nginx.port, caFile: pki.certFile, timeout: "5s" },
    },
    dns: { nameservers: [{ address: "127.0.0.1", port: unbound.port }] },
    admin: { listen: "127.0.0.1:0" },
  });
  try {
    await submit(up.port, ["a@sts.test", "b@stsplay.test", "c@plain.test"]);
    await waitFor(() => linesOf(up.memlog, "=>").length === 3);
    const lines = linesOf(up.memlog, "=>").join("\n");
    assert.match(lines, /a@sts\.test .*TLS=mta-sts\(enforce\)/);
    assert.match(lines, /b@stsplay\.test .*TLS=mta-sts\(testing\)/);
    assert.match(lines, /c@plain\.test .*TLS=pkix/);
    const text = await (await fetch(`${up.admin!.url}/metrics`)).text();
    const m = await parse(text);
    assert.equal(
      m['ferry_outbound_tls_total{cv="yes",policy="mta-sts"}'],
      2,
      "enforce and testing, one label",
    );
    assert.equal(m['ferry_outbound_tls_total{cv="yes",policy="pkix"}'], 1);
    const policies = new Set(
      Object.keys(m).filter((k) => k.startsWith("ferry_outbound_tls_total{")).map((k) =>
        /policy="([^"]*)"/.exec(k)![1]
      ),
    );
    assert.deepEqual([...policies].sort(), ["mta-sts", "pkix"]);
    assert.equal((await promtoolCheck(text)).code, 0);
  } finally {
    await up.dispose();
    await down.stop();
    await Deno.remove(down.dir, { recursive: true }).catch(() => {});
    await nginx.stop();
    await unbound.stop();
    await pki.cleanup();
  }
});

Deno.test("tlsPolicyLabel() keeps the decision's base name, bounded, and falls back to the CV", () => {
  assert.equal(tlsPolicyLabel("yes", "mta-sts(enforce)"), "mta-sts");
  assert.equal(tlsPolicyLabel("no", "mta-sts(testing)"), "mta-sts");
  assert.equal(tlsPolicyLabel("dane", "dane"), "dane");
  assert.equal(tlsPolicyLabel("none", "encrypted"), "encrypted");
  assert.equal(tlsPolicyLabel("yes", "something-new(x)"), "other");
  assert.equal(tlsPolicyLabel("yes"), "pkix");
  assert.equal(tlsPolicyLabel("no"), "opportunistic");
  assert.equal(tlsPolicyLabel("none"), "none");
});

Deno.test("ferry_outbound_tls_total counts a session that reached TLS and then failed its requirement (pkix, CV=no)", async () => {
  const pki = await createPki();
  const mx = await pki.issue({ cn: "mx.example.test", dns: ["mx.example.test"] });
  const down = await startTestFerry({ relay: { domains: "*", clients: ["127.0.0.0/8"] }, tls: ferryTls(mx) });
  const up = await startFerryIn({
    routes: [
      // The certificate names mx.example.test, not 127.0.0.1: it verifies only with tlsVerifyNames.
      { name: "bad", domains: "bad.test", hosts: [`[127.0.0.1]:${down.port}`], tlsVerifyHosts: "*" },
      {
        name: "ok",
        domains: "ok.test",
        hosts: [`[127.0.0.1]:${down.port}`],
        tlsVerifyHosts: "*",
        tlsVerifyNames: ["mx.example.test"],
      },
    ],
    delivery: { enable: true, tlsVerifyCertificates: pki.certFile },
    admin: { listen: "127.0.0.1:0" },
  }, { resolver: new MemoryResolver() });
  try {
    const id = await submit(up.port, ["a@bad.test"]);
    await waitFor(() => linesOf(up.memlog, "==").length === 1);
    assert.match(linesOf(up.memlog, "==")[0], /TLS=pkix: tlsVerifyHosts: certificate verification failed/);
    await submit(up.port, ["b@ok.test"]);
    await waitFor(() => linesOf(up.memlog, "=>").length === 1);
    const text = await (await fetch(`${up.admin!.url}/metrics`)).text();
    const m = await parse(text);
    assert.equal(m['ferry_outbound_tls_total{cv="no",policy="pkix"}'], 1, "the failed session");
    assert.equal(m['ferry_outbound_tls_total{cv="yes",policy="pkix"}'], 1, "the delivered one");
    // The message page's TLS facts of that attempt say the same.
    const shown = await fetch(`${up.admin!.url}/api/queue/${id}`, {
      headers: { authorization: `Bearer ${up.adminToken}` },
    }).then((r) => r.json());
    const tls = shown.envelope.recipients[0].extra.tls;
    assert.deepEqual([tls.policy, tls.cv, /^TLS1\.[23]$/.test(tls.version)], ["pkix", "no", true]);
  } finally {
    await up.dispose();
    await down.stop();
    await Deno.remove(down.dir, { recursive: true }).catch(() => {});
    await pki.cleanup();
  }
});
