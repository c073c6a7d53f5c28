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
import { parseTlsRptRecord, reportFileName } from "../../src/outbound/tls_rpt_report.ts";
import { ConfigError, validateConfig } from "../../src/config/load.ts";
import { TlsRptReporter } from "../../src/outbound/tls_rpt_reporter.ts";
import { TlsClientContext } from "../../src/tls/client.ts";
import { MemoryLog } from "../../src/core/log.ts";
import type { Envelope } from "../../src/core/envelope.ts";
import type { Spool } from "../../src/spool/spool.ts";

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
      receivingMx: "mx1.example.net",
      receivingIp: "192.0.2.1",
      at,
    });
    await s.record({
      domain: "example.net",
      policyType: "sts",
      receivingMx: "mx1.example.net",
      receivingIp: "192.0.2.1",
      at,
    });
    await s.record({
      domain: "example.net",
      policyType: "sts",
      receivingMx: "mx2.example.net",
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
  assert.equal(
    resultTypeOf("dane: certificate verification failed: no matching DANE TLSA records"),
    "tlsa-invalid",
  );
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
    tlsRpt: { enable: true },
  }, { resolver });
  try {
    await submit(up.port, ["user@example.test"]);
    await waitFor(() => linesOf(up.memlog, "==").length > 0, 30_000, "a deferral");
    await waitFor(
      async () => {
        const text = await Deno.readTextFile(`${up.dir}/spool/tls-rpt-results.json`).catch(() => "");
        return text.includes("starttls-not-supported");
      },
      30_000,
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
      tlsRpt: { enable: true },
    }, { resolver });
    try {
      await submit(ok.port, ["user@example.test"]);
      await waitFor(() => linesOf(ok.memlog, "=>").length > 0, 30_000, "a delivery");
      // The result is written in the background: read the file until it is there.
      const successes = () => {
        const store = new TlsRptStore(`${ok.dir}/spool/tls-rpt-results.json`);
        const day = store.days()[0];
        if (!day) return 0;
        const r = store.report("example.test", day, {
          organizationName: "o",
          contactInfo: "c",
          reportId: "i",
        }) as {
          policies: { summary: Record<string, number> }[];
        };
        return r.policies[0].summary["total-successful-session-count"];
      };
      await waitFor(() => successes() > 0, 30_000, "the success recorded");
      const r = { policies: [{ summary: { "total-successful-session-count": successes() } }] };
      assert.equal(r.policies[0].summary["total-successful-session-count"], 1);
    } finally {
      await ok.dispose();
    }
  });
});

Deno.test("parseTlsRptRecord() takes the one v=TLSRPTv1 record's mailto and https destinations", () => {
  assert.deepEqual(
    parseTlsRptRecord([
      "v=spf1 -all",
      "v=TLSRPTv1; rua=mailto:tls%2Breports@example.net, https://reports.example.net/tlsrpt ,ftp://x",
    ])?.map((u) => u.kind === "mailto" ? u.address : u.url.href),
    ["tls+reports@example.net", "https://reports.example.net/tlsrpt"],
  );
  // None, two, or a record without rua: the domain takes no reports (RFC 8460 §3).
  assert.equal(parseTlsRptRecord(["v=STSv1; id=1"]), undefined);
  assert.equal(
    parseTlsRptRecord(["v=TLSRPTv1; rua=mailto:a@example.net", "v=TLSRPTv1; rua=mailto:b@example.net"]),
    undefined,
  );
  assert.equal(parseTlsRptRecord(["v=TLSRPTv1;"]), undefined);
  assert.equal(parseTlsRptRecord(["v=TLSRPTv10; rua=mailto:a@example.net"]), undefined);
});

Deno.test("reportFileName() follows RFC 8460 §5.1 (sender!policy-domain!begin!end.json.gz)", () => {
  assert.equal(
    reportFileName("ferry.test", "example.net", "2026-12-05"),
    `ferry.test!example.net!${Date.UTC(2026, 11, 5) / 1000}!${Date.UTC(2026, 11, 5) / 1000 + 86399}.json.gz`,
  );
});

Deno.test("TlsRptStore: hand-offs and finished domains survive a reload; the first file format is read", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = `${dir}/r.json`;
    const s = new TlsRptStore(file);
    const at = Date.UTC(2026, 11, 5, 12);
    await s.record({ domain: "a.test", policyType: "sts", receivingMx: "mx.a.test", at });
    await s.record({ domain: "b.test", policyType: "tlsa", receivingMx: "mx.b.test", at });
    await s.markSent("2026-12-05", "a.test", "mailto:r@a.test");
    await s.finish("2026-12-05", "b.test");
    const again = new TlsRptStore(file);
    assert.deepEqual(again.domains("2026-12-05"), ["a.test"]);
    assert.deepEqual(again.sentTo("2026-12-05", "a.test"), ["mailto:r@a.test"]);
    await again.finish("2026-12-05", "a.test");
    assert.deepEqual(new TlsRptStore(file).days(), []);
    // The format main wrote before policies were kept apart.
    await Deno.writeTextFile(
      file,
      JSON.stringify({
        "2026-12-04": {
          "old.test": {
            policyType: "sts",
            success: 3,
            failures: {
              "starttls-not-supported|mx|192.0.2.1": {
                resultType: "starttls-not-supported",
                mxHost: "mx",
                receivingIp: "192.0.2.1",
                count: 2,
              },
            },
          },
        },
      }),
    );
    const old = new TlsRptStore(file).report("old.test", "2026-12-04", {
      organizationName: "o",
      contactInfo: "c",
      reportId: "i",
    }) as { policies: { summary: Record<string, number> }[] };
    assert.deepEqual(old.policies[0].summary, {
      "total-successful-session-count": 3,
      "total-failure-session-count": 2,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tlsRpt config: defaults, and bad input is a config error naming the field", () => {
  const c = validateConfig({});
  assert.deepEqual(c.tlsRpt, { enable: false, timeout: 30_000 });
  for (
    const [input, path] of [
      [{ tlsRpt: { enable: "yes" } }, "tlsRpt.enable"],
      [{ tlsRpt: { email: "not an address" } }, "tlsRpt.email"],
      [{ tlsRpt: { organizationName: "" } }, "tlsRpt.organizationName"],
      [{ tlsRpt: { timeout: "0s" } }, "tlsRpt.timeout"],
      [{ tlsRpt: { contactinfo: "x" } }, "tlsRpt.contactinfo"],
      [{ tlsRpt: { enable: true }, delivery: { enable: false } }, "tlsRpt.enable"],
    ] as const
  ) {
    try {
      validateConfig(input);
      assert.fail(`accepted ${JSON.stringify(input)}`);
    } catch (err) {
      assert.ok(err instanceof ConfigError, String(err));
      assert.equal(err.problems.length, 1, err.problems.join("\n"));
      assert.ok(err.problems[0].startsWith(`${path}: `), err.problems[0]);
    }
  }
});

Deno.test("TlsRptReporter: runs a minute after the UTC day boundary, retries a failed hand-off hourly, gives up after three days", async () => {
  const dir = await Deno.makeTempDir();
  const tlsContext = new TlsClientContext();
  try {
    const store = new TlsRptStore(`${dir}/r.json`);
    const day = Date.UTC(2026, 11, 6, 15);
    await store.record({ domain: "mail.test", policyType: "sts", receivingMx: "mx.mail.test", at: day });
    await store.record({ domain: "post.test", policyType: "sts", receivingMx: "mx.post.test", at: day });
    // A port nothing listens on: the POST fails at once.
    const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (closed.addr as Deno.NetAddr).port;
    closed.close();
    const resolver = new MemoryResolver({
      records: {
        "_smtp._tls.mail.test": { TXT: ["v=TLSRPTv1; rua=mailto:tls@mail.test"] },
        "_smtp._tls.post.test": { TXT: [`v=TLSRPTv1; rua=https://127.0.0.1:${port}/r`] },
      },
    });
    let now = day;
    const timers: { ms: number; fn: () => void }[] = [];
    const stored: Envelope[] = [];
    const spool = {
      newId: () => `id${stored.length}`,
      store: (env: Envelope) => (stored.push(env), Promise.resolve()),
    } as unknown as Spool;
    const log = new MemoryLog();
    const reporter = new TlsRptReporter({
      store,
      spool,
      resolver,
      log,
      hostname: "ferry.test",
      organizationName: "o",
      contactInfo: "c",
      email: "tlsrpt@ferry.test",
      tlsContext: () => tlsContext,
      httpsTimeoutMs: 2000,
      enqueue() {},
      clock: { now: () => now, timer: (ms, fn) => (timers.push({ ms, fn }), { cancel() {} }) },
    });
    reporter.start();
    assert.equal(timers[0].ms, Date.UTC(2026, 11, 7, 0, 1) - day);
    now = Date.UTC(2026, 11, 7, 0, 1);
    timers[0].fn();
    await waitFor(() => timers.length === 2, 10_000, "the run re-armed the timer");
    assert.equal(stored.length, 1);
    assert.equal(stored[0].recipients[0].address, "tls@mail.test");
    assert.equal(timers[1].ms, 3_600_000, "a failed POST is tried again in an hour");
    assert.deepEqual(store.domains("2026-12-06"), ["post.test"]);
    // Still failing more than three days after the day ended: dropped, with a log line.
    now = Date.UTC(2026, 11, 10, 1);
    timers[1].fn();
    await waitFor(() => timers.length === 3, 10_000, "the second run");
    assert.deepEqual(store.days(), []);
    assert.equal(stored.length, 1, "the mailed report is not queued again");
    assert.ok(
      log.lines.some((l) => /post\.test on 2026-12-06: not handed off for three days, dropped/.test(l.text)),
    );
    await reporter.stop();
  } finally {
    tlsContext.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("TLS-RPT counts sessions, not deliveries: two messages over one pooled connection are one success", async () => {
  const resolver = new MemoryResolver({
    records: {
      "example.test": { MX: [{ preference: 10, exchange: "mx.example.test" }] },
      "mx.example.test": { A: ["127.0.0.1"] },
      "other.test": { MX: [{ preference: 10, exchange: "mx.other.test" }] },
      "mx.other.test": { A: ["127.0.0.1"] },
    },
  });
  await withTlsDownstream(async ({ down }) => {
    const up = await startFerryIn({
      routes: [{ domains: "*", mx: true, port: down.port }],
      delivery: { enable: true, idleTimeout: "60s" },
      tlsRpt: { enable: true },
    }, { resolver });
    try {
      for (let i = 1; i <= 2; i++) {
        await submit(up.port, [`user${i}@example.test`]);
        await waitFor(() => linesOf(up.memlog, "=>").length === i, 30_000, `delivery ${i}`);
      }
      assert.equal(linesOf(down.memlog, "<=").length, 2);
      // A third session, to another MX name (so not the pooled one): once its result is in the file, so is
      // everything recorded before it (the whole state is written in order).
      await submit(up.port, ["user@other.test"]);
      const file = `${up.dir}/spool/tls-rpt-results.json`;
      await waitFor(
        async () => (await Deno.readTextFile(file).catch(() => "")).includes("other.test"),
        30_000,
        "the third session recorded",
      );
      const store = new TlsRptStore(file);
      const report = (domain: string) =>
        store.report(domain, store.days()[0], { organizationName: "o", contactInfo: "c", reportId: "i" }) as {
          policies: { summary: Record<string, number> }[];
        };
      assert.equal(report("example.test").policies[0].summary["total-successful-session-count"], 1);
      assert.equal(report("other.test").policies[0].summary["total-successful-session-count"], 1);
    } finally {
      await up.dispose();
    }
  });
});
