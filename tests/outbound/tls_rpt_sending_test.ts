/**
 * TLS-RPT sending (RFC 8460 §5) against real peers: TXT records (`_mta-sts`, `_smtp._tls`, signed TLSA) from
 * unbound, MTA-STS policies served by nginx, a real day of sessions (a MX without STARTTLS refused under an
 * enforce policy, a good MX, domains whose policy fetch fails (three ways), a testing policy delivered in clear, DANE
 * matching and not matching), then the reports: by mail through Ferry's own queue
 * to Postfix's smtp-sink, read back with Python's `email`, `gzip` and `json`, and by POST to an HTTPS server
 * with a test-CA certificate. A POST that fails is retried after a restart without mailing the report again.
 */
import assert from "node:assert/strict";
import { linesOf, startDownstream, startFerryIn, submit, waitFor } from "../helpers/downstream.ts";
import { startTestFerry } from "../helpers/ferry.ts";
import { startNginx } from "../helpers/nginx.ts";
import { runPython } from "../helpers/peers.ts";
import { createPki, ferryTls } from "../helpers/pki.ts";
import { freePort, startSink } from "../helpers/sink.ts";
import { startUnbound } from "../helpers/unbound.ts";
import { dayOf } from "../../src/outbound/security/tls_rpt.ts";
import { postReport } from "../../src/outbound/tls_rpt_https.ts";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import { dkimpyVerify, makeKey } from "../policy/checks/_dkim.ts";
import { TlsClientContext } from "../../src/tls/client.ts";
import { spkiSha256 } from "../helpers/dane.ts";

/** Reads a dumped report message (or, with --gz, a bare gzip'd body) as Python sees it. */
const READ = `
import sys, gzip, json, email
from email import policy
def report(gz):
    return json.loads(gzip.decompress(gz))
if sys.argv[1] == "--gz":
    print(json.dumps({"report": report(open(sys.argv[2], "rb").read())}))
    sys.exit(0)
msg = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=policy.default)
out = {"contentType": msg.get_content_type(), "reportType": msg.get_param("report-type"),
       "subject": str(msg["Subject"]), "domain": str(msg["TLS-Report-Domain"]),
       "submitter": str(msg["TLS-Report-Submitter"]), "tlsRequired": str(msg["TLS-Required"]),
       "from": str(msg["From"]), "to": str(msg["To"]), "parts": []}
for part in msg.iter_parts():
    out["parts"].append([part.get_content_type(), part.get_filename(), part.get_param("name")])
    if part.get_content_type() == "application/tlsrpt+gzip":
        out["report"] = report(part.get_payload(decode=True))
print(json.dumps(out))
`;

interface Policy {
  policy: Record<string, unknown>;
  summary: Record<string, number>;
  "failure-details": Record<string, unknown>[];
}
interface Report {
  "organization-name": string;
  "date-range": { "start-datetime": string; "end-datetime": string };
  "contact-info": string;
  "report-id": string;
  policies: Policy[];
}
interface MailedReport {
  contentType: string;
  reportType: string;
  subject: string;
  domain: string;
  submitter: string;
  tlsRequired: string;
  from: string;
  to: string;
  parts: [string, string | null, string | null][];
  report: Report;
}

async function python(args: string[]): Promise<Record<string, unknown>> {
  const out = await runPython(READ, args);
  assert.equal(out.code, 0, out.stderr);
  return JSON.parse(out.stdout);
}

Deno.test({
  name: "TLS-RPT: a day of real sessions is reported by mail (smtp-sink) and by HTTPS POST, once each",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const pki = await createPki();
    const smtpLeaf = await pki.issue({
      cn: "mx2.rpt.test",
      dns: ["mx1.rpt.test", "mx2.rpt.test", "mx.stsfail.test", "mx.norpt.test"],
    });
    const web = await pki.issue({
      cn: "mta-sts",
      dns: ["mta-sts.rpt.test", "mta-sts.stsfail.test", "mta-sts.testmode.test"],
    });
    const expired = await pki.issue({
      cn: "mta-sts.stsexpired.test",
      dns: ["mta-sts.stsexpired.test"],
      startDate: "20200101000000Z",
      endDate: "20210101000000Z",
    });
    const httpsLeaf = await pki.issue({ cn: "rpt.reports.test", dns: ["rpt.reports.test"] });
    // The good MX (STARTTLS, test-CA certificate) on 127.0.0.1, and one without STARTTLS on 127.0.0.2, same port.
    const down = await startTestFerry({
      relay: { domains: "*", clients: ["127.0.0.0/8"] },
      tls: ferryTls(smtpLeaf),
    });
    const plain = startDownstream({ hostname: "127.0.0.2", port: down.port });
    // A second MX without STARTTLS, for a domain whose MTA-STS policy is in testing mode.
    const plain3 = startDownstream({ hostname: "127.0.0.3", port: down.port });
    const policy = "version: STSv1\nmode: enforce\nmx: mx1.rpt.test\nmx: mx2.rpt.test\nmax_age: 86400\n";
    const spki = await spkiSha256(smtpLeaf.certFile);
    const nginx = await startNginx([
      { host: "mta-sts.rpt.test", certFile: web.chainFile, keyFile: web.keyFile, body: policy },
      {
        host: "mta-sts.stsfail.test",
        certFile: web.chainFile,
        keyFile: web.keyFile,
        body: policy,
        contentType: "text/html",
      },
      {
        host: "mta-sts.testmode.test",
        certFile: web.chainFile,
        keyFile: web.keyFile,
        body: "version: STSv1\nmode: testing\nmx: mx.testmode.test\nmax_age: 86400\n",
      },
      {
        host: "mta-sts.stsexpired.test",
        certFile: expired.chainFile,
        keyFile: expired.keyFile,
        body: policy,
      },
    ]);
    // The HTTPS report sink.
    const posts: { path: string; contentType: string | null; body: Uint8Array }[] = [];
    let answer = 503;
    const https = Deno.serve({
      hostname: "127.0.0.1",
      port: 0,
      cert: await Deno.readTextFile(httpsLeaf.chainFile),
      key: await Deno.readTextFile(httpsLeaf.keyFile),
      onListen() {},
    }, async (req) => {
      const body = new Uint8Array(await req.arrayBuffer());
      posts.push({ path: new URL(req.url).pathname, contentType: req.headers.get("content-type"), body });
      return new Response(null, { status: answer });
    });
    const sink = await startSink(await freePort());
    const unbound = await startUnbound({
      zones: [
        {
          name: "rpt.test",
          records: [
            "@ IN MX 10 mx1",
            "@ IN MX 20 mx2",
            "mx1 IN A 127.0.0.2",
            "mx2 IN A 127.0.0.1",
            "mta-sts IN A 127.0.0.1",
            `_mta-sts IN TXT "v=STSv1; id=20261206"`,
            `_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tls@reports.test,https://rpt.reports.test:${https.addr.port}/tlsrpt"`,
          ].join("\n"),
        },
        {
          name: "stsfail.test",
          records: [
            "@ IN MX 10 mx",
            "mx IN A 127.0.0.1",
            "mta-sts IN A 127.0.0.1",
            `_mta-sts IN TXT "v=STSv1; id=20261206"`,
            `_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tls@reports.test"`,
          ].join("\n"),
        },
        { name: "norpt.test", records: "@ IN MX 10 mx\nmx IN A 127.0.0.1" },
        // Policy fetches that fail: an expired certificate, and a policy host nothing answers on.
        ...[["stsexpired", "127.0.0.1"], ["stsdown", "127.0.0.5"]].map(([name, web]) => ({
          name: `${name}.test`,
          records: [
            "@ IN MX 10 mx",
            "mx IN A 127.0.0.1",
            `mta-sts IN A ${web}`,
            `_mta-sts IN TXT "v=STSv1; id=20261206"`,
          ].join("\n"),
        })),
        {
          name: "testmode.test",
          records: [
            "@ IN MX 10 mx",
            "mx IN A 127.0.0.3",
            "mta-sts IN A 127.0.0.1",
            `_mta-sts IN TXT "v=STSv1; id=20261206"`,
            `_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tls@reports.test"`,
          ].join("\n"),
        },
        // DANE (signed zones): a TLSA record matching the MX's key, and one that matches nothing.
        ...[["dane", spki], ["danewrong", "00".repeat(32)]].map(([name, hash]) => ({
          name: `${name}.test`,
          signed: true,
          records: [
            "@ IN MX 10 mx",
            "mx IN A 127.0.0.1",
            `_${down.port}._tcp.mx IN TLSA 3 1 1 ${hash}`,
            `_smtp._tls IN TXT "v=TLSRPTv1; rua=mailto:tls@reports.test"`,
          ].join("\n"),
        })),
        { name: "reports.test", records: "rpt IN A 127.0.0.1" },
      ],
    });
    const dir = await Deno.makeTempDir({ prefix: "ferry-tlsrpt-" });
    // Mailed reports must carry a DKIM signature of the reporting domain (§5.3): the outbound chain signs them.
    const dkimKey = makeKey("ferry.test", "rpt", "ed25519-sha256");
    await Deno.writeTextFile(`${dir}/dkim.pem`, dkimKey.pem);
    const config = {
      routes: [
        { domains: "reports.test", hosts: [`127.0.0.1:${sink.port}`] },
        { domains: "*", mx: true, port: down.port },
      ],
      delivery: {
        enable: true,
        tlsVerifyCertificates: pki.certFile,
        mtaSts: { port: nginx.port, caFile: pki.certFile, timeout: "5s" },
      },
      dns: { nameservers: [{ address: "127.0.0.1", port: unbound.port }] },
      dkim: { sign: [{ domain: "ferry.test", selector: "rpt", keyFile: `${dir}/dkim.pem` }] },
      tlsRpt: {
        enable: true,
        organizationName: "Ferry Test Org",
        contactInfo: "tls-contact@ferry.test",
        email: "tlsrpt@ferry.test",
        caFile: pki.certFile,
        timeout: "5s",
      },
    };
    let up = await startFerryIn(config, { dir });
    try {
      await submit(up.port, [
        "a@rpt.test",
        "b@stsfail.test",
        "c@norpt.test",
        "d@testmode.test",
        "e@dane.test",
        "g@stsexpired.test",
        "h@stsdown.test",
      ]);
      const log = () => up.memlog.lines.map((l) => l.text).join("\n");
      await waitFor(() => linesOf(up.memlog, "=>").length >= 7, 60_000, "seven deliveries").catch((err) => {
        throw new Error(`${err.message}; log:\n${log()}`);
      });
      // Only now: a failed host goes into back-off, and mx.danewrong.test is the good MX's address.
      await submit(up.port, ["f@danewrong.test"]);
      await waitFor(() => linesOf(up.memlog, "==").length >= 1, 60_000, "the DANE deferral").catch((err) => {
        throw new Error(`${err.message}; log:\n${log()}`);
      });
      const day = dayOf(Date.now());
      const tomorrow = Date.now() + 86_400_000;
      assert.match(
        linesOf(up.memlog, "=>").find((l) => l.includes("a@rpt.test")) ?? "",
        /mta-sts\(enforce\)/,
      );

      // Every kind of failed policy fetch is a result of its domain (these two publish no TLS-RPT record).
      const fetchFailures = () => {
        const results = JSON.parse(Deno.readTextFileSync(`${dir}/spool/tls-rpt-results.json`))[day];
        return ["stsfail.test", "stsexpired.test", "stsdown.test"].map((d) =>
          Object.values(results?.[d]?.policies ?? {}).flatMap((p) =>
            Object.values((p as { failures: Record<string, { resultType: string }> }).failures)
          ).map((f) => f.resultType)
        );
      };
      await waitFor(() => fetchFailures().every((f) => f.length > 0), 10_000, "the fetch failures recorded");
      assert.deepEqual(fetchFailures(), [["sts-policy-invalid"], ["sts-webpki-invalid"], [
        "sts-policy-fetch-error",
      ]]);

      // The POST fails (503): the five mail reports are queued, the POST waits for the next run; norpt.test
      // publishes no TLS-RPT record and gets nothing.
      const first = await up.tlsRptReports!.sendPending(tomorrow);
      assert.deepEqual(first, { sent: 5, failed: 1 }, log());
      assert.equal(posts.length, 1);
      await waitFor(async () => (await sink.messages()).length >= 5, 60_000, "five mailed reports");
      const files = [];
      for await (const e of Deno.readDir(sink.dir)) if (e.isFile) files.push(`${sink.dir}/${e.name}`);
      const mailed = await Promise.all(files.map((f) => python([f]))) as unknown as MailedReport[];
      const rpt = mailed.find((m) => m.domain === "rpt.test")!;
      const stsfail = mailed.find((m) => m.domain === "stsfail.test")!;
      assert.ok(rpt && stsfail, JSON.stringify(mailed));

      // The message (RFC 8460 §5.3).
      const begin = Date.parse(`${day}T00:00:00Z`) / 1000;
      assert.equal(rpt.contentType, "multipart/report");
      assert.equal(rpt.reportType, "tlsrpt");
      assert.equal(rpt.submitter, "ferry.test");
      assert.equal(rpt.tlsRequired, "No");
      assert.equal(rpt.from, "tlsrpt@ferry.test");
      assert.equal(rpt.to, "tls@reports.test");
      assert.equal(
        rpt.subject,
        `Report Domain: rpt.test Submitter: ferry.test Report-ID: <${day}.rpt.test@ferry.test>`,
      );
      const raw = await Deno.readFile(files[mailed.indexOf(rpt)]);
      assert.deepEqual(
        await dkimpyVerify(raw, [dkimKey]),
        [true],
        "signed by ferry.test, verified by dkimpy",
      );
      const file = `ferry.test!rpt.test!${begin}!${begin + 86399}.json.gz`;
      assert.deepEqual(rpt.parts, [["text/plain", null, null], ["application/tlsrpt+gzip", file, file]]);

      // The report (RFC 8460 §4.4): the enforce policy with one success (mx2) and the stripped STARTTLS (mx1).
      const r = rpt.report;
      assert.equal(r["organization-name"], "Ferry Test Org");
      assert.equal(r["contact-info"], "tls-contact@ferry.test");
      assert.equal(r["report-id"], `${day}.rpt.test@ferry.test`);
      assert.deepEqual(r["date-range"], {
        "start-datetime": `${day}T00:00:00Z`,
        "end-datetime": `${day}T23:59:59Z`,
      });
      assert.equal(r.policies.length, 1);
      assert.deepEqual(r.policies[0].policy, {
        "policy-type": "sts",
        "policy-string": [
          "version: STSv1",
          "mode: enforce",
          "mx: mx1.rpt.test",
          "mx: mx2.rpt.test",
          "max_age: 86400",
        ],
        "policy-domain": "rpt.test",
        "mx-host": ["mx1.rpt.test", "mx2.rpt.test"],
      });
      assert.deepEqual(r.policies[0].summary, {
        "total-successful-session-count": 1,
        "total-failure-session-count": 1,
      });
      const [fail] = r.policies[0]["failure-details"];
      assert.equal(fail["result-type"], "starttls-not-supported");
      assert.equal(fail["sending-mta-ip"], "127.0.0.1");
      assert.equal(fail["receiving-mx-hostname"], "mx1.rpt.test");
      assert.equal(fail["receiving-ip"], "127.0.0.2");
      assert.equal(fail["failed-session-count"], 1);

      // The failed policy fetch (wrong content type) is reported as sts-policy-invalid; the delivery itself
      // went on without a policy.
      const types = stsfail.report.policies.map((p) => p.policy["policy-type"]).sort();
      assert.deepEqual(types, ["no-policy-found", "sts"]);
      const sts = stsfail.report.policies.find((p) => p.policy["policy-type"] === "sts")!;
      assert.equal(sts["failure-details"][0]["result-type"], "sts-policy-invalid");
      assert.equal(sts.summary["total-failure-session-count"], 1);
      const none = stsfail.report.policies.find((p) => p.policy["policy-type"] === "no-policy-found")!;
      assert.equal(none.summary["total-successful-session-count"], 1);

      // MTA-STS testing: delivered in clear, reported as what enforce would have refused.
      const testmode = mailed.find((m) => m.domain === "testmode.test")!.report.policies;
      assert.equal(testmode.length, 1);
      assert.equal(testmode[0].policy["policy-type"], "sts");
      assert.ok((testmode[0].policy["policy-string"] as string[]).includes("mode: testing"));
      assert.deepEqual(testmode[0].summary, {
        "total-successful-session-count": 0,
        "total-failure-session-count": 1,
      });
      assert.equal(testmode[0]["failure-details"][0]["result-type"], "starttls-not-supported");
      assert.equal(testmode[0]["failure-details"][0]["receiving-ip"], "127.0.0.3");

      // DANE: the TLSA records are the policy string; a key that matches no record is tlsa-invalid.
      const dane = mailed.find((m) => m.domain === "dane.test")!.report.policies;
      assert.deepEqual(dane.map((p) => [p.policy, p.summary]), [[
        {
          "policy-type": "tlsa",
          "policy-string": [`3 1 1 ${spki.toUpperCase()}`],
          "policy-domain": "dane.test",
        },
        { "total-successful-session-count": 1, "total-failure-session-count": 0 },
      ]]);
      const wrong = mailed.find((m) => m.domain === "danewrong.test")!.report.policies;
      assert.equal(wrong[0].policy["policy-type"], "tlsa");
      assert.equal(wrong[0]["failure-details"][0]["result-type"], "tlsa-invalid");
      assert.equal(wrong[0]["failure-details"][0]["receiving-mx-hostname"], "mx.danewrong.test");

      // After a restart the POST is tried again and succeeds; the mail reports are not queued again.
      await up.stop();
      answer = 200;
      up = await startFerryIn(config, { dir });
      const second = await up.tlsRptReports!.sendPending(tomorrow);
      assert.deepEqual(second, { sent: 1, failed: 0 });
      assert.equal(posts.length, 2);
      assert.equal(posts[1].path, "/tlsrpt");
      assert.equal(posts[1].contentType, "application/tlsrpt+gzip");
      await Deno.writeFile(`${dir}/post.json.gz`, posts[1].body);
      const posted = (await python(["--gz", `${dir}/post.json.gz`])).report as Report;
      assert.deepEqual(posted.policies, r.policies);
      assert.equal(posted["report-id"], r["report-id"]);
      assert.equal(linesOf(up.memlog, "<=").length, 0, "no report queued again");
      // Everything was handed off: the day is gone, and nothing is sent twice.
      assert.deepEqual(await up.tlsRptReports!.sendPending(tomorrow), { sent: 0, failed: 0 });
      const left = JSON.parse(await Deno.readTextFile(`${dir}/spool/tls-rpt-results.json`));
      assert.equal(left[day]?.["rpt.test"], undefined);
    } finally {
      await up.stop();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      await plain.stop();
      await plain3.stop();
      await down.stop();
      await Deno.remove(down.dir, { recursive: true }).catch(() => {});
      await https.shutdown();
      await sink.stop();
      await nginx.stop();
      await unbound.stop();
      await pki.cleanup();
    }
  },
});

Deno.test({
  name:
    "postReport(): a 2xx over a trusted certificate only; untrusted, misnamed, redirected and silent fail",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const pki = await createPki();
    const other = await pki.newRoot("Another Root");
    const good = await pki.issue({ cn: "r.test", dns: ["r.test"] });
    const foreign = await other.issue({ cn: "r.test", dns: ["r.test"] });
    const resolver = new MemoryResolver({
      records: { "r.test": { A: ["127.0.0.1"] }, "s.test": { A: ["127.0.0.1"] } },
    });
    const servers: Deno.HttpServer[] = [];
    const serve = async (leaf: { chainFile: string; keyFile: string }, status: number) => {
      const s = Deno.serve({
        hostname: "127.0.0.1",
        port: 0,
        cert: await Deno.readTextFile(leaf.chainFile),
        key: await Deno.readTextFile(leaf.keyFile),
        onListen() {},
      }, async (req) => {
        await req.arrayBuffer();
        return new Response(null, { status, headers: status === 301 ? { location: "https://r.test/" } : {} });
      });
      servers.push(s);
      return s.addr.port;
    };
    // Accepts connections and never answers.
    const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const held: Deno.Conn[] = [];
    (async () => {
      for await (const c of silent) held.push(c);
    })().catch(() => {});
    const tlsContext = new TlsClientContext({ caFile: pki.certFile });
    const opts = { resolver, tlsContext, timeoutMs: 3000 };
    const body = new Uint8Array([31, 139, 8, 0]);
    try {
      const ok = await serve(good, 202);
      assert.match(await postReport(new URL(`https://r.test:${ok}/r`), body, opts), /^HTTP\/1\.1 202/);
      await assert.rejects(
        postReport(new URL(`https://s.test:${ok}/r`), body, opts),
        /certificate of s\.test not valid: server name does not match/,
      );
      const untrusted = await serve(foreign, 200);
      await assert.rejects(
        postReport(new URL(`https://r.test:${untrusted}/r`), body, opts),
        /certificate of r\.test not valid: unable to verify/,
      );
      const moved = await serve(good, 301);
      await assert.rejects(postReport(new URL(`https://r.test:${moved}/r`), body, opts), /301/);
      const started = Date.now();
      await assert.rejects(
        postReport(new URL(`https://r.test:${(silent.addr as Deno.NetAddr).port}/r`), body, {
          ...opts,
          timeoutMs: 300,
        }),
        /timed out/,
      );
      assert.ok(Date.now() - started < 3000, "the deadline held");
    } finally {
      silent.close();
      for (const c of held) c.close();
      for (const s of servers) await s.shutdown();
      tlsContext.close();
      await pki.cleanup();
    }
  },
});
