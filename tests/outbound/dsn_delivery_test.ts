/**
 * Delivery reports (RFC 3464) as generated from real deliveries to real peers — Postfix's smtp-sink told
 * to refuse, and a second Ferry with PRDR and DSN — read back by Python's `email` package. The unit tests
 * of dsn_report.ts pass bare values; these check what Ferry itself puts into Remote-MTA and
 * Diagnostic-Code, and what a route with `dsnLasthop` passes on.
 */

import assert from "node:assert/strict";
import type { FerryConfig } from "../../mod.ts";
import type { PolicyMiddleware } from "../../src/policy/context.ts";
import { freePort, startSink } from "../helpers/sink.ts";
import { startTestFerry, type TestFerry } from "../helpers/ferry.ts";
import {
  linesOf,
  type ParsedReport,
  parseReport,
  type ReportRig,
  startReportRig,
  submit,
  waitFor,
} from "../helpers/downstream.ts";

type Rig = ReportRig;

/** An upstream Ferry routing ok.test to `okPort`; reports to the sender go to a recording server. */
function rig(okPort: number, extra: FerryConfig = {}, okRoute: Record<string, unknown> = {}): Promise<Rig> {
  return startReportRig(
    [{ name: "ok", domains: "ok.test", hosts: [`127.0.0.1:${okPort}`], ...okRoute }],
    extra,
  );
}

/** The first report whose first recipient block has `action`. */
async function reportWith(r: Rig, action: string): Promise<ParsedReport> {
  let found: ParsedReport | undefined;
  await waitFor(
    async () => {
      for (const m of r.reports.messages) {
        const p = await parseReport(m.data);
        if (p.recipients[0]?.["action"] === action) {
          found = p;
          return true;
        }
      }
      return false;
    },
    8000,
    `a report with Action: ${action}`,
  );
  return found!;
}

async function withDownFerry(overrides: FerryConfig, fn: (down: TestFerry) => Promise<void>): Promise<void> {
  const down = await startTestFerry({ relay: { domains: ["ok.test"], clients: [] }, ...overrides });
  try {
    await fn(down);
  } finally {
    await down.stop();
    await Deno.remove(down.dir, { recursive: true }).catch(() => {});
  }
}

Deno.test("a failure report from a real 550 (smtp-sink) says 'dns; host' and the reply once", async () => {
  const port = await freePort();
  const sink = await startSink(port, ["-f", "RCPT", "-B", "550 5.7.1 Refused by test"]);
  const r = await rig(port);
  try {
    await submit(r.up.port, ["user@ok.test"]);
    const p = await reportWith(r, "failed");
    const rc = p.recipients[0];
    assert.equal(rc["remote-mta"], "dns; 127.0.0.1");
    assert.equal(rc["diagnostic-code"], "smtp; 550 5.7.1 Refused by test");
    assert.equal(rc["status"], "5.7.1");
  } finally {
    await r.stop();
    await sink.stop();
  }
});

Deno.test("a 'relayed' success report from a real peer without DSN (smtp-sink -N) carries 'dns; host' and the 250 once", async () => {
  const port = await freePort();
  const sink = await startSink(port, ["-N"]);
  const r = await rig(port);
  try {
    await submit(r.up.port, ["a@ok.test"], { rcptParams: { "a@ok.test": " NOTIFY=SUCCESS" } });
    const p = await reportWith(r, "relayed");
    const rc = p.recipients[0];
    assert.equal(rc["remote-mta"], "dns; 127.0.0.1");
    assert.match(rc["diagnostic-code"], /^smtp; 250 2\.0\.0 (?!250)/);
  } finally {
    await r.stop();
    await sink.stop();
  }
});

Deno.test("a delay report after a real 450 (smtp-sink -r) names the remote MTA and its reply", async () => {
  const port = await freePort();
  const sink = await startSink(port, ["-r", "RCPT", "-b", "450 4.2.0 Mailbox busy"]);
  const r = await rig(port, {
    delivery: { delayWarning: "150ms" },
    retry: [{ domains: "*", rules: [{ every: "100ms", until: "3s" }] }],
  });
  try {
    await submit(r.up.port, ["user@ok.test"]);
    const p = await reportWith(r, "delayed");
    const rc = p.recipients[0];
    assert.equal(rc["remote-mta"], "dns; 127.0.0.1");
    assert.equal(rc["diagnostic-code"], "smtp; 450 4.2.0 Mailbox busy");
  } finally {
    await r.stop();
    await sink.stop();
  }
});

Deno.test("a recipient refused by a real PRDR peer (a second Ferry) is reported with the PRDR reply once", async () => {
  const trap: PolicyMiddleware<"prdr"> = async function refuse_trap(c, next) {
    if (c.recipient.local === "trap") c.reject("No thanks", 550, "5.7.1");
    await next();
  };
  await withDownFerry({ prdr: { enable: true }, policy: { prdr: [trap] } }, async (down) => {
    const r = await rig(down.port);
    try {
      await submit(r.up.port, ["ok@ok.test", "trap@ok.test"]);
      const p = await reportWith(r, "failed");
      assert.equal(p.recipients.length, 1);
      const rc = p.recipients[0];
      assert.equal(rc["final-recipient"], "rfc822; trap@ok.test");
      assert.equal(rc["remote-mta"], "dns; 127.0.0.1");
      assert.equal(rc["diagnostic-code"], "smtp; 550 5.7.1 <trap@ok.test> No thanks");
      assert.equal((await down.spool.list()).length, 1);
    } finally {
      await r.stop();
    }
  });
});

Deno.test("dsnLasthop: a DSN-aware next hop (a second Ferry) receives no NOTIFY, ORCPT, RET or ENVID, and Ferry reports 'delivered' itself", async () => {
  await withDownFerry({}, async (down) => {
    const r = await rig(down.port, {}, { dsnLasthop: true });
    try {
      await submit(r.up.port, ["a@ok.test"], {
        mailParams: " RET=HDRS ENVID=env-1",
        rcptParams: { "a@ok.test": " NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a@ok.test" },
      });
      const p = await reportWith(r, "delivered");
      assert.equal(p.recipients[0]["final-recipient"], "rfc822; a@ok.test");
      assert.equal(p.recipients[0]["remote-mta"], "dns; 127.0.0.1");
      assert.match(p.recipients[0]["diagnostic-code"], /^smtp; 250 2\.0\.0 OK id=\S+$/);
      assert.equal(p.perMessage["original-envelope-id"], "env-1");
      const [{ envelope }] = await down.spool.list();
      assert.equal(envelope.ret, undefined);
      assert.equal(envelope.envid, undefined);
      assert.equal(envelope.recipients[0].address, "a@ok.test");
      assert.equal(envelope.recipients[0].notify, undefined);
      assert.equal(envelope.recipients[0].orcpt, undefined);
    } finally {
      await r.stop();
    }
  });
});

Deno.test("without dsnLasthop the DSN-aware next hop (a second Ferry) gets the parameters and Ferry sends no success report", async () => {
  await withDownFerry({}, async (down) => {
    const r = await rig(down.port);
    try {
      await submit(r.up.port, ["a@ok.test"], {
        mailParams: " RET=HDRS ENVID=env-1",
        rcptParams: { "a@ok.test": " NOTIFY=SUCCESS ORCPT=rfc822;a@ok.test" },
      });
      await waitFor(() => r.up.memlog.has("Completed"), 8000, "delivery");
      const [{ envelope }] = await down.spool.list();
      assert.equal(envelope.ret, "HDRS");
      assert.equal(envelope.envid, "env-1");
      assert.deepEqual(envelope.recipients[0].notify, ["SUCCESS"]);
      assert.equal(envelope.recipients[0].orcpt?.address, "a@ok.test");
      assert.ok(!r.up.memlog.has(/^<= <>/), "no report queued");
    } finally {
      await r.stop();
    }
  });
});

Deno.test("a host-level deferral's == line names the host with H= as a recipient-level one does", async () => {
  const dead = await freePort();
  const r = await rig(dead);
  try {
    await submit(r.up.port, ["user@ok.test"]);
    await waitFor(() => linesOf(r.up.memlog, "==").length > 0, 15_000, "a deferral");
    assert.match(
      linesOf(r.up.memlog, "==")[0],
      new RegExp(`^== user@ok\\.test R=ok T=smtp defer H=127\\.0\\.0\\.1 \\[127\\.0\\.0\\.1\\]:${dead}: `),
    );
  } finally {
    await r.stop();
  }
});
