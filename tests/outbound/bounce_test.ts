import assert from "node:assert/strict";
import type { FerryConfig } from "../../mod.ts";
import { freePort, startSink } from "../helpers/sink.ts";
import {
  linesOf,
  parseReport,
  type ReportRig,
  startDownstream,
  startReportRig,
  submit,
  waitFor,
} from "../helpers/downstream.ts";

// dead.test goes to a loopback port nobody listens on; reports to the sender (client.test) go to a
// scripted downstream that records them; ok.test goes to Postfix's smtp-sink or a scripted server.

type Rig = ReportRig;

async function rig(okPort: number, extra: FerryConfig = {}): Promise<Rig> {
  const dead = await freePort();
  return await startReportRig([
    { name: "dead", domains: "dead.test", hosts: [`127.0.0.1:${dead}`] },
    { name: "ok", domains: "ok.test", hosts: [`127.0.0.1:${okPort}`] },
  ], extra);
}

Deno.test("a dead destination is retried per the rules, then fails with a full RFC 3464 report to the sender", async () => {
  const r = await rig(1);
  try {
    const id = await submit(r.up.port, ["user@dead.test"], {
      mailParams: " RET=FULL ENVID=env+2D42",
      rcptParams: { "user@dead.test": " ORCPT=rfc822;Orig+2Buser@dead.test" },
    });
    await waitFor(() => r.reports.messages.length > 0, 15_000, "a failure report");
    const defers = linesOf(r.up.memlog, "==");
    assert.ok(defers.length >= 2, `expected several deferrals, got ${defers.length}`);
    assert.match(
      defers[0],
      /^== user@dead\.test R=dead T=smtp defer H=127\.0\.0\.1 \[127\.0\.0\.1\]:\d+: .*(refused|Connection)/i,
    );
    const fails = linesOf(r.up.memlog, "**");
    assert.equal(fails.length, 1);
    assert.match(fails[0], /^\*\* user@dead\.test R=dead T=smtp.*retry timeout exceeded/);
    assert.ok(r.up.memlog.has(/host_error|errno ECONNREFUSED/));
    await waitFor(async () => (await r.up.spool.get(id)) === undefined, 8000, "message removed");

    const [report] = r.reports.messages;
    assert.equal(report.from, "");
    assert.deepEqual(report.rcpts, ["sender@client.test"]);
    const p = await parseReport(report.data);
    assert.equal(p.contentType, "multipart/report");
    assert.equal(p.reportType, "delivery-status");
    assert.deepEqual(p.parts, ["text/plain", "message/delivery-status", "message/rfc822"]);
    assert.equal(p.perMessage["reporting-mta"], "dns; ferry.test");
    assert.equal(p.perMessage["original-envelope-id"], "env-42");
    assert.equal(p.recipients.length, 1);
    const rcpt = p.recipients[0];
    assert.equal(rcpt["final-recipient"], "rfc822; user@dead.test");
    assert.equal(rcpt["original-recipient"], "rfc822; Orig+user@dead.test");
    assert.equal(rcpt["action"], "failed");
    assert.match(rcpt["status"], /^(5\.\d{1,3}\.\d{1,3}|4\.4\.7)$/);
    assert.equal(p.returned.type, "message/rfc822");
    assert.match(p.returned.text, /Subject: test/);
    assert.match(p.returned.text, /test body/);
    assert.match(p.to ?? "", /sender@client\.test/);
  } finally {
    await r.stop();
  }
});

Deno.test("RET=HDRS returns only the original header (text/rfc822-headers)", async () => {
  const r = await rig(1);
  try {
    await submit(r.up.port, ["user@dead.test"], { mailParams: " RET=HDRS" });
    await waitFor(() => r.reports.messages.length > 0, 15_000, "a failure report");
    const p = await parseReport(r.reports.messages[0].data);
    assert.equal(p.returned.type, "text/rfc822-headers");
    assert.match(p.returned.text, /Subject: test/);
    assert.doesNotMatch(p.returned.text, /test body/);
    assert.equal(p.recipients[0]["action"], "failed");
    assert.equal(p.recipients[0]["original-recipient"], undefined);
  } finally {
    await r.stop();
  }
});

Deno.test("NOTIFY=SUCCESS to a host without DSN (smtp-sink -N) brings a 'relayed' success report", async () => {
  const sinkPort = await freePort();
  // smtp-sink announces DSN unless told not to (-N).
  const sink = await startSink(sinkPort, ["-N"]);
  const r = await rig(sinkPort);
  try {
    await submit(r.up.port, ["a@ok.test", "b@ok.test"], {
      rcptParams: { "a@ok.test": " NOTIFY=SUCCESS" },
    });
    await waitFor(() => r.reports.messages.length > 0, 15_000, "a success report");
    assert.equal(linesOf(r.up.memlog, "=>").filter((l) => l.includes("@ok.test")).length, 2);
    const p = await parseReport(r.reports.messages[0].data);
    assert.equal(p.reportType, "delivery-status");
    assert.equal(p.recipients.length, 1, "only the recipient that asked for SUCCESS");
    assert.equal(p.recipients[0]["final-recipient"], "rfc822; a@ok.test");
    assert.equal(p.recipients[0]["action"], "relayed");
    assert.match(p.recipients[0]["status"], /^2\./);
    assert.equal(p.returned.type, "text/rfc822-headers");
    // Nothing more comes: b@ok.test did not ask for a success notice. Once the upstream spool is empty the
    // message is done and every report it caused has been delivered: the counts are final.
    await waitFor(async () => (await r.up.spool.count()) === 0, 15_000, "an empty upstream spool");
    assert.equal(r.reports.messages.length, 1);
    assert.equal((await sink.messages()).length, 1);
  } finally {
    await r.stop();
    await sink.stop();
  }
});

Deno.test("NOTIFY=SUCCESS to a DSN-aware host passes the request on and sends no report", async () => {
  const aware = startDownstream({ dsn: true });
  const r = await rig(aware.port);
  try {
    await submit(r.up.port, ["a@ok.test"], {
      rcptParams: { "a@ok.test": " NOTIFY=SUCCESS ORCPT=rfc822;a@ok.test" },
    });
    await waitFor(() => r.up.memlog.has("Completed"), 15_000, "delivery");
    assert.match(aware.messages[0].rcptLines[0], /NOTIFY=SUCCESS/);
    // Reports are queued (a "<= <>" line) before a message's "Completed": after it, none can come.
    assert.equal(r.reports.messages.length, 0);
    assert.ok(!r.up.memlog.has(/^<= <>/));
  } finally {
    await r.stop();
    await aware.stop();
  }
});

Deno.test("NOTIFY=NEVER: a failed recipient brings no report", async () => {
  const r = await rig(1);
  try {
    await submit(r.up.port, ["user@dead.test"], { rcptParams: { "user@dead.test": " NOTIFY=NEVER" } });
    await waitFor(() => linesOf(r.up.memlog, "**").length > 0, 15_000, "the failure");
    await waitFor(() => r.up.memlog.has("Completed"), 8000, "Completed");
    // Reports are queued (a "<= <>" line) before a message's "Completed": after it, none can come.
    assert.equal(r.reports.messages.length, 0);
    assert.ok(!r.up.memlog.has(/^<= <>/));
    assert.equal(await r.up.spool.count(), 0);
  } finally {
    await r.stop();
  }
});

Deno.test("a message from the null sender that fails brings no report", async () => {
  const r = await rig(1);
  try {
    await submit(r.up.port, ["user@dead.test"], { from: "" });
    await waitFor(() => linesOf(r.up.memlog, "**").length > 0, 15_000, "the failure");
    await waitFor(() => r.up.memlog.has("Completed"), 8000, "Completed");
    // Reports are queued (a "<= <>" line) before a message's "Completed": after it, none can come.
    assert.equal(r.reports.messages.length, 0);
    assert.ok(!r.up.memlog.has(/^<= <>.*report/));
    assert.equal(await r.up.spool.count(), 0);
  } finally {
    await r.stop();
  }
});

Deno.test("delayWarning sends 'delayed' reports with Will-Retry-Until while retrying, then the failure", async () => {
  const r = await rig(1, { delivery: { delayWarning: "300ms" } });
  try {
    await submit(r.up.port, ["user@dead.test"]);
    await waitFor(
      () => r.reports.messages.some((m) => m.data.includes("Action: failed")),
      15_000,
      "the failure report",
    );
    const parsed = await Promise.all(r.reports.messages.map((m) => parseReport(m.data)));
    const delays = parsed.filter((p) => p.recipients[0]?.["action"] === "delayed");
    assert.ok(delays.length >= 1, "at least one delay report");
    const d = delays[0];
    assert.equal(d.reportType, "delivery-status");
    assert.match(d.recipients[0]["status"], /^4\./);
    assert.ok(d.recipients[0]["will-retry-until"], "Will-Retry-Until is given");
    const until = Date.parse(d.recipients[0]["will-retry-until"]);
    assert.ok(Number.isFinite(until));
    assert.match(d.subject ?? "", /Delayed/i);
    assert.equal(parsed.filter((p) => p.recipients[0]?.["action"] === "failed").length, 1);
    // Delay reports are spaced by the warning interval, not one per attempt.
    assert.ok(delays.length <= 4, `too many delay reports: ${delays.length}`);
  } finally {
    await r.stop();
  }
});

Deno.test("a message needing SMTPUTF8 to a peer without it fails at once: the ** line carries 553 5.6.7 as the report's Status does", async () => {
  // The scripted downstream offers no SMTPUTF8: Ferry refuses before sending MAIL.
  const peer = startDownstream();
  const r = await rig(peer.port);
  try {
    await submit(r.up.port, ["a@ok.test"], { mailParams: " SMTPUTF8" });
    await waitFor(() => r.reports.messages.length > 0, 15_000, "a failure report");
    const [line] = linesOf(r.up.memlog, "**").filter((l) => l.includes("a@ok.test"));
    assert.match(
      line ?? "",
      /^\*\* a@ok\.test R=ok T=smtp H=127\.0\.0\.1 \[127\.0\.0\.1\]:\d+: 553 5\.6\.7 Message needs SMTPUTF8, which the peer does not offer$/,
    );
    const p = await parseReport(r.reports.messages[0].data);
    assert.equal(p.recipients[0]["status"], "5.6.7");
    assert.equal(
      p.recipients[0]["diagnostic-code"],
      "x-ferry; 553 5.6.7 Message needs SMTPUTF8, which the peer does not offer",
    );
    assert.equal(peer.messages.length, 0);
  } finally {
    await r.stop();
    await peer.stop();
  }
});
