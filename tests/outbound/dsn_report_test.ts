import assert from "node:assert/strict";
import type { Envelope, Recipient } from "../../src/core/envelope.ts";
import { buildDsn, type DsnOptions, shouldSendDsn } from "../../src/outbound/dsn_report.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const ORIGINAL = enc(
  "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hello\r\nMessage-ID: <m1@example.org>\r\n\r\n" +
    "Hi Bob,\r\n.this line starts with a dot\r\nbye\r\n",
);

function envelope(extra: Partial<Envelope> = {}): Envelope {
  return {
    id: "1abcde-000001-XY",
    sender: "alice@example.org",
    recipients: [],
    size: ORIGINAL.length,
    receivedAt: Date.UTC(2026, 0, 2, 3, 4, 5),
    protocol: "esmtps",
    client: { ip: "127.0.0.1", port: 2525 },
    receivedBy: "mx.ferry.test",
    ...extra,
  };
}

const bob: Recipient = {
  address: "bob@example.net",
  status: "failed",
  orcpt: { type: "RFC822", address: "Bob+tag@Example.NET" },
};
const carol: Recipient = { address: "carol@example.net", status: "pending", notify: ["DELAY", "FAILURE"] };

/** Python's email package parses the report and prints what the tests check, as JSON. */
const PARSER = String.raw`
import sys, json, email
from email import policy
msg = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.compat32)
out = {"type": msg.get_content_type(), "report_type": msg.get_param("report-type"),
       "headers": {k: str(v) for k, v in msg.items()}, "defects": [str(d) for d in msg.defects]}
parts = msg.get_payload()
out["parts"] = [p.get_content_type() for p in parts]
out["text"] = parts[0].get_payload(decode=True).decode()
status = parts[1].get_payload()
out["status"] = [dict(block.items()) for block in status]
third = parts[2]
if third.get_content_type() == "message/rfc822":
    inner = third.get_payload()[0]
    out["returned"] = {"subject": inner["Subject"], "body": inner.get_payload()}
else:
    out["returned"] = {"raw": third.get_payload()}
print(json.dumps(out))
`;

async function parse(report: Uint8Array) {
  const cmd = new Deno.Command("python3", {
    args: ["-c", PARSER],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  });
  const child = cmd.spawn();
  const w = child.stdin.getWriter();
  await w.write(report);
  await w.close();
  const { code, stdout, stderr } = await child.output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  return JSON.parse(new TextDecoder().decode(stdout));
}

function base(extra: Partial<DsnOptions> = {}): DsnOptions {
  return {
    kind: "failure",
    reportingMta: "mx.ferry.test",
    envelope: envelope({ envid: "QQ314159", recipients: [bob, carol] }),
    recipients: [{
      recipient: bob,
      action: "failed",
      status: "5.1.1",
      remoteMta: "mx.example.net",
      diagnostic: "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown",
      lastAttempt: new Date(Date.UTC(2026, 0, 2, 4, 0, 0)),
    }],
    original: ORIGINAL,
    now: new Date(Date.UTC(2026, 0, 2, 4, 0, 1)),
    messageId: "dsn1@mx.ferry.test",
    ...extra,
  };
}

function assertWireShape(report: Uint8Array) {
  const text = new TextDecoder().decode(report);
  assert.ok(!/[^\r]\n/.test(text), "bare LF");
  assert.ok(
    text.split("\r\n").every((l) => new TextEncoder().encode(l).length <= 998),
    "line over 998 octets",
  );
}

Deno.test("buildDsn() makes a multipart/report failure notice that Python's email parser reads", async () => {
  const report = buildDsn(base());
  assertWireShape(report);
  const r = await parse(report);
  assert.equal(r.type, "multipart/report");
  assert.equal(r.report_type, "delivery-status");
  assert.deepEqual(r.defects, []);
  assert.deepEqual(r.parts, ["text/plain", "message/delivery-status", "message/rfc822"]);
  assert.equal(r.headers.From, "Mail Delivery System <MAILER-DAEMON@mx.ferry.test>");
  assert.equal(r.headers.To, "<alice@example.org>");
  assert.equal(r.headers["Auto-Submitted"], "auto-replied");
  assert.equal(r.headers["Message-ID"], "<dsn1@mx.ferry.test>");
  assert.equal(r.headers["MIME-Version"], "1.0");
  assert.equal(r.headers.Date, "Fri, 02 Jan 2026 04:00:01 +0000");
  assert.match(r.headers.Subject, /Undelivered/);
  assert.match(r.text, /bob@example\.net/);
  assert.match(r.text, /User unknown/);

  const [perMessage, perRcpt, ...rest] = r.status;
  assert.equal(rest.length, 0);
  assert.equal(perMessage["Reporting-MTA"], "dns; mx.ferry.test");
  assert.equal(perMessage["Original-Envelope-Id"], "QQ314159");
  assert.equal(perMessage["Arrival-Date"], "Fri, 02 Jan 2026 03:04:05 +0000");
  assert.equal(perRcpt["Original-Recipient"], "RFC822; Bob+tag@Example.NET");
  assert.equal(perRcpt["Final-Recipient"], "rfc822; bob@example.net");
  assert.equal(perRcpt.Action, "failed");
  assert.equal(perRcpt.Status, "5.1.1");
  assert.equal(perRcpt["Remote-MTA"], "dns; mx.example.net");
  assert.equal(
    perRcpt["Diagnostic-Code"].replace(/\r?\n\s+/g, " "),
    "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown",
  );
  assert.equal(perRcpt["Last-Attempt-Date"], "Fri, 02 Jan 2026 04:00:00 +0000");
  assert.equal(perRcpt["Will-Retry-Until"], undefined);
  assert.equal(r.returned.subject, "hello");
  assert.match(r.returned.body, /^\.this line starts with a dot$/m);
});

Deno.test("buildDsn() returns only the headers as text/rfc822-headers for RET=HDRS", async () => {
  const opts = base();
  opts.envelope = envelope({ ret: "HDRS", recipients: [bob] });
  const r = await parse(buildDsn(opts));
  assert.deepEqual(r.parts, ["text/plain", "message/delivery-status", "text/rfc822-headers"]);
  assert.match(r.returned.raw, /^Subject: hello\r?$/m);
  assert.doesNotMatch(r.returned.raw, /Hi Bob/);
  assert.equal(r.status[0]["Original-Envelope-Id"], undefined);
});

Deno.test("buildDsn() returns only the headers of a REQUIRETLS message even with RET=FULL (RFC 8689 §5)", async () => {
  const opts = base();
  opts.envelope = envelope({ ret: "FULL", requireTls: true, recipients: [bob] });
  const r = await parse(buildDsn(opts));
  assert.deepEqual(r.parts, ["text/plain", "message/delivery-status", "text/rfc822-headers"]);
  assert.match(r.text, /Its header is attached below/);
  assert.match(r.returned.raw, /^Subject: hello\r?$/m);
  assert.doesNotMatch(r.returned.raw, /Hi Bob/);
});

Deno.test("buildDsn() writes a delay notice with Will-Retry-Until and headers only by default", async () => {
  const r = await parse(buildDsn(base({
    kind: "delay",
    recipients: [{
      recipient: carol,
      action: "delayed",
      status: "4.4.1",
      diagnostic: "X-Ferry; connection refused",
      willRetryUntil: new Date(Date.UTC(2026, 0, 6, 3, 4, 5)),
    }],
  })));
  assert.match(r.headers.Subject, /Delayed/);
  assert.deepEqual(r.parts, ["text/plain", "message/delivery-status", "text/rfc822-headers"]);
  assert.equal(r.status[1].Action, "delayed");
  assert.equal(r.status[1].Status, "4.4.1");
  assert.equal(r.status[1]["Will-Retry-Until"], "Tue, 06 Jan 2026 03:04:05 +0000");
  assert.equal(r.status[1]["Original-Recipient"], undefined);
});

Deno.test("buildDsn() lists several recipients in order and returns the full message for RET=FULL", async () => {
  const opts = base({
    kind: "success",
    recipients: [
      { recipient: bob, action: "delivered", status: "2.0.0", remoteMta: "mx.example.net" },
      { recipient: carol, action: "relayed", status: "2.0.0" },
    ],
  });
  opts.envelope = envelope({ ret: "FULL", recipients: [bob, carol] });
  const r = await parse(buildDsn(opts));
  assert.match(r.headers.Subject, /Successful/);
  assert.deepEqual(r.status.slice(1).map((b: Record<string, string>) => [b["Final-Recipient"], b.Action]), [
    ["rfc822; bob@example.net", "delivered"],
    ["rfc822; carol@example.net", "relayed"],
  ]);
  assert.equal(r.parts[2], "message/rfc822");
});

Deno.test("buildDsn() keeps hostile values from injecting header fields or long lines", async () => {
  const evil: Recipient = {
    address: "x@example.net",
    status: "failed",
    orcpt: { type: "rfc822", address: "a@b\r\nAction: delivered" },
  };
  const report = buildDsn(base({
    envelope: envelope({ recipients: [evil] }),
    recipients: [{
      recipient: evil,
      action: "failed",
      status: "5.0.0",
      diagnostic: "smtp; 550 " + "y".repeat(3000) + "\r\nStatus: 2.0.0",
    }],
  }));
  assertWireShape(report);
  const r = await parse(report);
  assert.equal(r.status[1].Action, "failed");
  assert.equal(r.status[1].Status, "5.0.0");
  assert.equal(r.status[1]["Original-Recipient"], "rfc822; a@b+0D+0AAction:+20delivered");
});

Deno.test("buildDsn() falls back to headers when the original is over the return size limit", async () => {
  const r = await parse(buildDsn(base({ returnSizeLimit: 50 })));
  assert.equal(r.parts[2], "text/rfc822-headers");
});

Deno.test("buildDsn() uses the RFC 6533 global types when addresses are UTF-8", () => {
  const jo: Recipient = { address: "jörg@example.net", status: "failed" };
  const text = new TextDecoder().decode(buildDsn(base({
    envelope: envelope({ smtputf8: true, recipients: [jo] }),
    recipients: [{ recipient: jo, action: "failed", status: "5.1.1" }],
  })));
  assert.match(text, /report-type=global-delivery-status/);
  assert.match(text, /Content-Type: message\/global-delivery-status/);
  assert.match(text, /Final-Recipient: utf-8; jörg@example.net/);
  assert.match(text, /Content-Type: message\/global\r\n/);
});

Deno.test("shouldSendDsn() follows RFC 3461 NOTIFY and never answers the null sender", () => {
  const e = envelope();
  const r = (notify?: Recipient["notify"]): Recipient => ({ address: "b@x", status: "pending", notify });
  assert.equal(shouldSendDsn(e, r(), "failure"), true);
  assert.equal(shouldSendDsn(e, r(), "delay"), true);
  assert.equal(shouldSendDsn(e, r(), "success"), false);
  assert.equal(shouldSendDsn(e, r(["NEVER"]), "failure"), false);
  assert.equal(shouldSendDsn(e, r(["SUCCESS"]), "success"), true);
  assert.equal(shouldSendDsn(e, r(["SUCCESS"]), "failure"), false);
  assert.equal(shouldSendDsn(e, r(["FAILURE"]), "delay"), false);
  assert.equal(shouldSendDsn(e, r(["DELAY", "FAILURE"]), "delay"), true);
  assert.equal(shouldSendDsn(envelope({ sender: "" }), r(["SUCCESS", "FAILURE"]), "failure"), false);
});
