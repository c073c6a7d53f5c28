/**
 * DMARC reports: a running Ferry records every evaluated message in its history; queueing the reports gives
 * one aggregate report per reporting domain, gzip'd under the RFC's file name, to each rua destination that
 * passes External Destination Verification; the XML validates with xmllint against rua-schema.xsd from
 * Debian's libmail-dmarc-perl and Python reads it back; a failure (fo=1, ruf) gives an RFC 6591 report.
 */

import assert from "node:assert/strict";
import { gunzipSync } from "node:zlib";
import { RawClient, startTestFerry } from "../helpers/ferry.ts";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import { spf } from "../../src/policy/checks/spf.ts";
import { dkim } from "../../src/policy/checks/dkim.ts";
import { dmarc } from "../../src/policy/checks/dmarc.ts";

const SCHEMA = "/usr/share/perl5/auto/share/dist/Mail-DMARC/rua-schema.xsd";
const dec = new TextDecoder();

async function send(port: number, sender: string, from: string, subject = "s") {
  const c = await RawClient.connect(port);
  try {
    await c.reply();
    await c.cmd("EHLO client.sender.test");
    await c.cmd(`MAIL FROM:<${sender}>`);
    await c.cmd("RCPT TO:<r@example.test>");
    await c.cmd("DATA");
    return await c.cmd(
      `From: ${from}\r\nSubject: ${subject}\r\nMessage-ID: <${crypto.randomUUID()}@x>\r\n\r\nbody\r\n.`,
    );
  } finally {
    c.close();
  }
}

/** Runs Python on stdin text; returns its stdout parsed as JSON. */
async function python(script: string, input: string): Promise<unknown> {
  const child = new Deno.Command("/usr/bin/python3", {
    args: ["-c", script],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(input));
  await w.close();
  const out = await child.output();
  assert.ok(out.success, dec.decode(out.stderr));
  return JSON.parse(dec.decode(out.stdout));
}

const PARSE_MESSAGE = `
import email, json, sys
msg = email.message_from_string(sys.stdin.read())
# message/* parts (feedback-report) are containers to the email package: give their text as it is.
parts = [p for p in msg.walk() if not p.is_multipart() or p.get_content_maintype() == "message"]
def body(p):
    if p.get_content_maintype() == "message":
        return b"".join(x.as_bytes() for x in p.get_payload())
    return p.get_payload(decode=True) or b""
print(json.dumps({
  "type": msg.get_content_type(), "report_type": msg.get_param("report-type"), "subject": msg["Subject"],
  "to": msg["To"], "from": msg["From"],
  "parts": [{"type": p.get_content_type(), "filename": p.get_filename(),
             "payload": body(p).hex()} for p in parts]}))
`;

const PARSE_XML = `
import json, sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.read())
print(json.dumps({
  "root": root.tag,
  "domain": root.findtext("policy_published/domain"), "p": root.findtext("policy_published/p"),
  "org": root.findtext("report_metadata/org_name"),
  "records": [{"ip": r.findtext("row/source_ip"), "count": int(r.findtext("row/count")),
               "disposition": r.findtext("row/policy_evaluated/disposition"),
               "spf": r.findtext("row/policy_evaluated/spf"), "dkim": r.findtext("row/policy_evaluated/dkim"),
               "header_from": r.findtext("identifiers/header_from"),
               "envelope_from": r.findtext("identifiers/envelope_from"),
               "auth_spf": r.findtext("auth_results/spf/result")} for r in root.findall("record")]}))
`;

Deno.test("DMARC aggregate and failure reports: recorded, queued per rua after verification, schema-valid, readable", async () => {
  const resolver = new MemoryResolver({
    records: {
      "sender.test": { TXT: ["v=spf1 ip4:127.0.0.1 -all"] },
      "evil.test": { TXT: ["v=spf1 ip4:127.0.0.1 -all"] },
      "_dmarc.sender.test": {
        TXT: [
          "v=DMARC1; p=reject; fo=1; ruf=mailto:fail@sender.test; " +
          "rua=mailto:agg@sender.test,mailto:agg@thirdparty.test!10m,mailto:agg@unverified.test",
        ],
      },
      "sender.test._report._dmarc.thirdparty.test": { TXT: ["v=DMARC1"] },
    },
  });
  const f = await startTestFerry({
    checks: [spf(), dkim(), dmarc()],
    dmarc: { reports: { email: "dmarc-reports@ferry.test", orgName: "Ferry Test", failure: true } },
  }, { resolver });
  const dir = await Deno.makeTempDir({ prefix: "ferry-dmarc-rep-" });
  // The schema names a targetNamespace but refers to its own types without a prefix, which no validator can
  // compile (xmllint: "References from this schema to components in no namespace are not allowed"). Without
  // the targetNamespace attribute it is the schema of the <feedback> documents receivers actually exchange.
  const schema = `${dir}/rua-schema.xsd`;
  await Deno.writeTextFile(
    schema,
    (await Deno.readTextFile(SCHEMA)).replace(
      /\s+targetNamespace="http:\/\/dmarc\.org\/dmarc-xml\/0\.1"/,
      "",
    ),
  );
  try {
    assert.equal((await send(f.port, "a@sender.test", "a@sender.test"))?.code, 250);
    assert.equal((await send(f.port, "b@sender.test", "b@sender.test"))?.code, 250);
    // Spoofed From: SPF passes for evil.test, nothing aligns, p=reject refuses it; it is still reported.
    const spoofReply = await send(f.port, "x@evil.test", "ceo@sender.test");
    assert.equal(spoofReply?.code, 550, f.memlog.lines.map((l) => l.text).join("\n"));
    assert.equal(await f.spool.count(), 3, "two messages and one failure report");

    const ids = await f.dmarcReports!.sendPending();
    assert.equal(ids.length, 2, "sender.test itself and the verified third party");
    assert.ok(f.memlog.has(/to <agg@unverified\.test>: not sent, the destination did not authorise reports/));

    const reports = [];
    for (const id of ids) {
      const env = await f.spool.get(id);
      const m = await python(PARSE_MESSAGE, dec.decode(await f.spool.readData(id))) as {
        subject: string;
        to: string;
        from: string;
        parts: { type: string; filename: string | null; payload: string }[];
      };
      assert.equal(env?.sender, "dmarc-reports@ferry.test");
      assert.equal(m.from, "dmarc-reports@ferry.test");
      assert.match(m.subject, /^Report Domain: sender\.test Submitter: ferry\.test Report-ID: <\S+>$/);
      const gz = m.parts.find((p) => p.type === "application/gzip")!;
      assert.match(gz.filename!, /^ferry\.test!sender\.test!\d+!\d+!\S+\.xml\.gz$/);
      const xml = dec.decode(gunzipSync(Uint8Array.fromHex(gz.payload)));
      const file = `${dir}/${id}.xml`;
      await Deno.writeTextFile(file, xml);
      const lint = await new Deno.Command("xmllint", {
        args: ["--noout", "--schema", schema, file],
        stderr: "piped",
      })
        .output();
      assert.ok(lint.success, dec.decode(lint.stderr));
      assert.match(dec.decode(lint.stderr), /validates/);
      reports.push({ to: m.to, xml: await python(PARSE_XML, xml) });
      // An unknown element makes xmllint refuse it: the validation can fail.
      await Deno.writeTextFile(
        `${file}.bad`,
        xml.replace("<version>1.0</version>", "<version>1.0</version><x/>"),
      );
      const bad = await new Deno.Command("xmllint", { args: ["--noout", "--schema", schema, `${file}.bad`] })
        .output();
      assert.equal(bad.success, false);
    }
    assert.deepEqual(reports.map((r) => r.to).sort(), ["agg@sender.test", "agg@thirdparty.test"]);
    const x = reports[0].xml as {
      domain: string;
      p: string;
      org: string;
      records: {
        count: number;
        disposition: string;
        spf: string;
        header_from: string;
        envelope_from: string;
      }[];
    };
    assert.deepEqual([x.domain, x.p, x.org], ["sender.test", "reject", "Ferry Test"]);
    assert.equal(x.records.reduce((n, r) => n + r.count, 0), 3);
    const spoof = x.records.find((r) => r.disposition === "reject")!;
    assert.deepEqual([spoof.count, spoof.spf, spoof.envelope_from], [1, "fail", "evil.test"]);
    const good = x.records.find((r) => r.disposition === "none")!;
    assert.deepEqual([good.count, good.spf, good.header_from], [2, "pass", "sender.test"]);

    // The history is empty once the reports are queued: nothing is reported twice.
    assert.deepEqual(await f.dmarcReports!.sendPending(), []);

    // The failure report (fo=1: any mechanism failed to align) went to ruf as an RFC 6591 message.
    const all = await f.spool.list();
    const failure = all.find((e) => e.envelope.recipients[0].address === "fail@sender.test");
    assert.ok(failure, "a failure report");
    const fm = await python(PARSE_MESSAGE, dec.decode(await f.spool.readData(failure.envelope.id))) as {
      type: string;
      report_type: string;
      parts: { type: string; payload: string }[];
    };
    assert.deepEqual([fm.type, fm.report_type], ["multipart/report", "feedback-report"]);
    const fr = dec.decode(
      Uint8Array.fromHex(fm.parts.find((p) => p.type === "message/feedback-report")!.payload),
    );
    assert.match(fr, /Feedback-Type: auth-failure/);
    assert.match(fr, /Auth-Failure: dmarc/);
    assert.match(fr, /Source-IP: 127\.0\.0\.1/);
    assert.match(fr, /Delivery-Result: reject/);
    const orig = dec.decode(
      Uint8Array.fromHex(fm.parts.find((p) => p.type === "text/rfc822-headers")!.payload),
    );
    assert.match(orig, /From: ceo@sender\.test/);
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("failure reports only where dmarcEnableForensic is set when dmarc.reports.failure is off", async () => {
  const resolver = new MemoryResolver({
    records: {
      "evil.test": { TXT: ["v=spf1 ip4:127.0.0.1 -all"] },
      "_dmarc.sender.test": { TXT: ["v=DMARC1; p=none; fo=1; ruf=mailto:fail@sender.test"] },
    },
  });
  const f = await startTestFerry({
    checks: [spf(), dkim(), dmarc()],
    dmarc: { reports: {} },
    policy: {
      mail: [async (c, next) => {
        // Exim's control = dmarc_enable_forensic, for one sender.
        if (c.sender === "traced@evil.test") c.set("dmarcEnableForensic", true);
        await next();
      }],
    },
  }, { resolver });
  try {
    assert.equal((await send(f.port, "x@evil.test", "ceo@sender.test"))?.code, 250);
    // A UTF-8 Subject (RFC 6532) reaches the report's header section unchanged (it was mojibake: the headers
    // were decoded as windows-1252 and encoded again as UTF-8).
    const subject = "\u00dcberweisung \u2709 5 \u20ac";
    assert.equal((await send(f.port, "traced@evil.test", "ceo@sender.test", subject))?.code, 250);
    const reports = (await f.spool.list()).filter((e) =>
      e.envelope.recipients[0].address === "fail@sender.test"
    );
    assert.equal(reports.length, 1);
    const text = dec.decode(await f.spool.readData(reports[0].envelope.id));
    assert.match(text, /Original-Mail-From: <traced@evil\.test>/);
    assert.match(text, /^From: postmaster@ferry\.test\r$/m);
    assert.ok(text.includes(`\r\nSubject: ${subject}\r\n`), "the original Subject, as it was sent");
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});
