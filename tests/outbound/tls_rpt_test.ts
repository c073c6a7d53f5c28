/** TLS-RPT results (RFC 8460): recorded per domain and day, durable, and a report Python's json and gzip read. */
import assert from "node:assert/strict";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import { gzipReport, resultTypeOf, TlsRptStore } from "../../src/outbound/security/tls_rpt.ts";
import {
  linesOf,
  startDownstream,
  startFerryIn,
  submit,
  waitFor,
  withTlsDownstream,
} from "../helpers/downstream.ts";
import { runPython } from "../helpers/peers.ts";

const READ = `
import sys, gzip, json
r = json.loads(gzip.decompress(open(sys.argv[1], "rb").read()))
p = r["policies"][0]
print(json.dumps({"org": r["organization-name"], "start": r["date-range"]["start-datetime"],
  "type": p["policy"]["policy-type"], "domain": p["policy"]["policy-domain"],
  "ok": p["summary"]["total-successful-session-count"], "bad": p["summary"]["total-failure-session-count"],
  "details": [(d["result-type"], d["receiving-mx-hostname"], d["failed-session-count"]) for d in p["failure-details"]]}))
`;

Deno.test("TlsRptStore: a day with successes and failures gives a gzip'd RFC 8460 report Python reads; it survives a reload", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/r.json`;
    const at = Date.UTC(2026, 11, 6, 10);
    const s = new TlsRptStore(file);
    await s.record({
      domain: "example.net",
      policyType: "sts",
      mxHost: "mx1.example.net",
      receivingIp: "192.0.2.1",
      at,
    });
    await s.record({
      domain: "example.net",
      policyType: "sts",
      mxHost: "mx1.example.net",
      receivingIp: "192.0.2.1",
      at,
    });
    await s.record({
      domain: "example.net",
      policyType: "sts",
      mxHost: "mx2.example.net",
      receivingIp: "192.0.2.2",
      failure: "certificate-expired",
      at,
    });
    const again = new TlsRptStore(file);
    assert.deepEqual(again.days(), ["2026-12-06"]);
    const report = again.report("example.net", "2026-12-06", {
      organizationName: "Ferry Test",
      contactInfo: "postmaster@ferry.test",
      reportId: "r1",
    });
    await Deno.writeFile(`${dir}/r.json.gz`, await gzipReport(report));
    const out = await runPython(READ, [`${dir}/r.json.gz`]);
    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual(JSON.parse(out.stdout), {
      org: "Ferry Test",
      start: "2026-12-06T00:00:00Z",
      type: "sts",
      domain: "example.net",
      ok: 2,
      bad: 1,
      details: [["certificate-expired", "mx2.example.net", 1]],
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("resultTypeOf() maps Ferry's host errors to RFC 8460 result types", () => {
  assert.equal(
    resultTypeOf("tlsVerifyHosts: TLS required but STARTTLS not offered by mx [1.2.3.4]"),
    "starttls-not-supported",
  );
  assert.equal(
    resultTypeOf("mta-sts: certificate verification failed: certificate does not match mx"),
    "certificate-host-mismatch",
  );
  assert.equal(
    resultTypeOf("x: certificate verification failed: certificate has expired"),
    "certificate-expired",
  );
  assert.equal(
    resultTypeOf("x: certificate verification failed: unable to get local issuer certificate"),
    "certificate-not-trusted",
  );
  assert.equal(resultTypeOf("dane: TLSA lookup for _25._tcp.mx failed: SERVFAIL"), "dnssec-invalid");
  assert.equal(resultTypeOf("dane: required but no secure TLSA records for mx"), "dane-required");
});

Deno.test("deliveries record TLS-RPT results in the spool directory: a stripped STARTTLS and a success", async () => {
  const resolver = new MemoryResolver({
    records: {
      "example.test": { MX: [{ preference: 10, exchange: "mx.example.test" }] },
      "mx.example.test": { A: ["127.0.0.1"] },
    },
  });
  const plain = startDownstream();
  const up = await startFerryIn({
    routes: [{ domains: "*", mx: true, port: plain.port, tlsVerifyHosts: "*" }],
    delivery: { enable: true },
  }, { resolver });
  try {
    await submit(up.port, ["user@example.test"]);
    await waitFor(() => linesOf(up.memlog, "==").length > 0, 8000, "a deferral");
    await waitFor(
      async () => {
        const text = await Deno.readTextFile(`${up.dir}/spool/tls-rpt-results.json`).catch(() => "");
        return text.includes("starttls-not-supported");
      },
      5000,
      "the failure recorded",
    );
  } finally {
    await up.dispose();
    await plain.stop();
  }
  await withTlsDownstream(async ({ down }) => {
    const ok = await startFerryIn({
      routes: [{ domains: "*", mx: true, port: down.port }],
      delivery: { enable: true },
    }, { resolver });
    try {
      await submit(ok.port, ["user@example.test"]);
      await waitFor(() => linesOf(ok.memlog, "=>").length > 0, 8000, "a delivery");
      const store = new TlsRptStore(`${ok.dir}/spool/tls-rpt-results.json`);
      const day = store.days()[0];
      const r = store.report("example.test", day, {
        organizationName: "o",
        contactInfo: "c",
        reportId: "i",
      }) as {
        policies: { summary: Record<string, number> }[];
      };
      assert.equal(r.policies[0].summary["total-successful-session-count"], 1);
    } finally {
      await ok.dispose();
    }
  });
});
