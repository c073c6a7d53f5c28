/**
 * The rspamd check against rspamd 3.4: two recipients whose settings differ get different verdicts, with
 * PRDR (a reply each) and without (one reply; delivered, quarantined or not delivered each), verdicts saved
 * per recipient with the message; rspamd down defers unless failOpen.
 */
import assert from "node:assert/strict";
import { RawClient, type TestFerry, withFerry } from "../../helpers/ferry.ts";
import { startRspamd, type TestRspamd } from "../../helpers/rspamd.ts";
import { rspamd, type RspamdOptions } from "../../../src/policy/checks/rspamd.ts";
import type { FerryConfig } from "../../../mod.ts";
import { startDownstream, startFerryIn, submit, waitFor } from "../../helpers/downstream.ts";
import { MemoryResolver } from "../../../src/dns/memory_resolver.ts";

const dec = new TextDecoder();

function config(url: string, extra: Partial<RspamdOptions> = {}): FerryConfig {
  return {
    prdr: { enable: true },
    checks: [
      rspamd({
        url,
        timeout: "10s",
        settingsId: (r) => (r.local.startsWith("lenient") ? "lenient" : undefined),
        quarantine: ["add header"],
        ...extra,
      }),
    ],
    routes: [{ name: "review", domains: [], hosts: ["127.0.0.1"], port: 9 }, { domains: "*", mx: true }],
    quarantine: { route: "review" },
  };
}

async function open(f: TestFerry): Promise<RawClient> {
  const c = await RawClient.connect(f.port);
  assert.equal((await c.reply())?.code, 220);
  assert.equal((await c.cmd("EHLO client.test"))?.code, 250);
  return c;
}

const body = (text: string) =>
  `From: a@sender.test\r\nTo: strict@example.test\r\nSubject: hello\r\nMessage-ID: <m1@sender.test>\r\n` +
  `Date: Sun, 06 Dec 2026 10:00:00 +0000\r\n\r\n${text}\r\n.\r\n`;

async function withRspamd(fn: (r: TestRspamd) => Promise<void>) {
  const r = await startRspamd();
  try {
    await fn(r);
  } finally {
    await r.stop();
  }
}

Deno.test("rspamd check: per-recipient verdicts with and without PRDR, saved with the message", async () => {
  await withRspamd(async (rs) => {
    await withFerry(config(rs.url), async (f) => {
      // With PRDR: the strict recipient is refused, the lenient one accepted, one copy stored.
      let c = await open(f);
      try {
        assert.equal((await c.cmd("MAIL FROM:<a@sender.test> PRDR"))?.code, 250);
        assert.equal((await c.cmd("RCPT TO:<strict@example.test>"))?.code, 250);
        assert.equal((await c.cmd("RCPT TO:<lenient@example.test>"))?.code, 250);
        assert.equal((await c.cmd("DATA"))?.code, 354);
        await c.send(body("FERRY-TEST-SPAM"));
        assert.equal((await c.reply())?.code, 353);
        const first = await c.reply(15_000);
        const second = await c.reply(15_000);
        assert.equal(first?.code, 550, first?.text);
        assert.match(first!.text, /^5\.7\.1 <strict@example\.test> /);
        assert.equal(second?.code, 250, second?.text);
        const final = await c.reply();
        assert.equal(final?.code, 250);
        const env = await f.spool.get(/id=(\S+)/.exec(final!.text)![1]);
        assert.deepEqual(env?.recipients.map((r) => r.address), ["lenient@example.test"]);
        const saved = env?.policy?.rspamd as Record<
          string,
          { verdict: string; action: string; settingsId?: string }
        >;
        assert.equal(saved["strict@example.test"].verdict, "reject");
        assert.equal(saved["lenient@example.test"].verdict, "deliver");
        assert.equal(saved["lenient@example.test"].settingsId, "lenient");
      } finally {
        c.close();
      }

      // Without PRDR: one 250; the strict recipient is not delivered, the lenient one is.
      c = await open(f);
      try {
        assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
        assert.equal((await c.cmd("RCPT TO:<strict@example.test>"))?.code, 250);
        assert.equal((await c.cmd("RCPT TO:<lenient@example.test>"))?.code, 250);
        assert.equal((await c.cmd("DATA"))?.code, 354);
        await c.send(body("FERRY-TEST-SPAM"));
        const final = await c.reply(15_000);
        assert.equal(final?.code, 250, final?.text);
        const env = await f.spool.get(/id=(\S+)/.exec(final!.text)![1]);
        assert.deepEqual(env?.recipients.map((r) => r.address), ["lenient@example.test"]);
        assert.ok(f.memlog.has("rspamd: <strict@example.test> not delivered (reject)"));

        // add header → the quarantine route for the strict recipient only, with rspamd's header edits.
        assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
        assert.equal((await c.cmd("RCPT TO:<strict@example.test>"))?.code, 250);
        assert.equal((await c.cmd("RCPT TO:<lenient@example.test>"))?.code, 250);
        assert.equal((await c.cmd("DATA"))?.code, 354);
        await c.send(body("FERRY-TEST-HEADER"));
        const held = await c.reply(15_000);
        assert.equal(held?.code, 250, held?.text);
        const id = /id=(\S+)/.exec(held!.text)![1];
        const env2 = await f.spool.get(id);
        const extras = Object.fromEntries(env2!.recipients.map((r) => [r.address, r.extra?.quarantine]));
        assert.equal(typeof extras["strict@example.test"], "string");
        assert.equal(extras["lenient@example.test"], undefined);
        const stored = dec.decode(await f.spool.readData(id));
        assert.match(stored, /^X-Spam-Status: Yes, score=/m);
        assert.ok(f.memlog.has(/Q=strict@example\.test for/));

        // greylist → 451 4.7.1 for the message; rewrite subject → delivered with rspamd's new Subject.
        assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
        assert.equal((await c.cmd("RCPT TO:<lenient@example.test>"))?.code, 250);
        assert.equal((await c.cmd("DATA"))?.code, 354);
        await c.send(body("FERRY-TEST-GREY"));
        const grey = await c.reply(15_000);
        assert.equal(grey?.code, 451, grey?.text);
        assert.match(grey!.text, /^4\.7\.1 /);
        assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
        assert.equal((await c.cmd("RCPT TO:<lenient@example.test>"))?.code, 250);
        assert.equal((await c.cmd("DATA"))?.code, 354);
        await c.send(body("FERRY-TEST-SUBJECT"));
        const rewritten = await c.reply(15_000);
        assert.equal(rewritten?.code, 250, rewritten?.text);
        const rewrittenId = /id=(\S+)/.exec(rewritten!.text)![1];
        const text = dec.decode(await f.spool.readData(rewrittenId));
        assert.match(text, /^Subject: \*\*\* SPAM \*\*\* hello\r$/m);
        // rspamd was given the queue id the message is stored under (its Queue-Id, echoed by milter_headers).
        assert.ok(text.includes(`\r\nX-Rspamd-Queue-Id: ${rewrittenId}\r\n`), text.slice(0, 600));
        assert.doesNotMatch(text, /^Subject: hello\r$/m);

        // Both recipients strict and the message rejected for both: the client is told.
        assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
        assert.equal((await c.cmd("RCPT TO:<strict@example.test>"))?.code, 250);
        assert.equal((await c.cmd("RCPT TO:<strict2@example.test>"))?.code, 250);
        assert.equal((await c.cmd("DATA"))?.code, 354);
        await c.send(body("FERRY-TEST-SPAM"));
        const refused = await c.reply(15_000);
        assert.equal(refused?.code, 550, refused?.text);
      } finally {
        c.close();
      }
    });

    // Brightmail's three outcomes in one message, through delivery: delivered, alternate route, not delivered.
    const normal = startDownstream();
    const held = startDownstream();
    const f = await startFerryIn({
      checks: [
        rspamd({
          url: rs.url,
          timeout: "10s",
          settingsId: (r) => (["lenient", "medium"].includes(r.local) ? r.local : undefined),
          quarantine: ["add header"],
        }),
      ],
      routes: [
        { name: "review", domains: [], hosts: ["127.0.0.1"], port: held.port },
        { domains: "*", hosts: ["127.0.0.1"], port: normal.port },
      ],
      quarantine: { route: "review" },
    }, { resolver: new MemoryResolver({ records: {} }) });
    try {
      await submit(f.port, ["strict@dest.test", "medium@dest.test", "lenient@dest.test"], {
        from: "a@sender.test",
        body: body("FERRY-TEST-SPAM FERRY-TEST-HEADER").replace(/\.\r\n$/, ""),
      });
      await waitFor(
        () => normal.messages.length === 1 && held.messages.length === 1,
        15_000,
        "both deliveries",
      );
      assert.deepEqual(normal.messages[0].rcpts, ["lenient@dest.test"]);
      assert.deepEqual(held.messages[0].rcpts, ["medium@dest.test"]);
      // Logged once Ferry has the 250, which the downstream sends after it counted the message.
      await waitFor(() => f.memlog.has(/=> medium@dest\.test R=review /), 8000, "the delivery logged");
      assert.ok(f.memlog.has("rspamd: <strict@dest.test> not delivered (reject)"));
      assert.ok(!f.memlog.has(/=> strict@dest\.test/));
    } finally {
      await f.dispose();
      await normal.stop();
      await held.stop();
    }
  });
});

Deno.test("rspamd check: rspamd down defers with 451 4.3.0; failOpen delivers", async () => {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dead = `http://127.0.0.1:${(l.addr as Deno.NetAddr).port}`;
  l.close();
  for (const failOpen of [false, true]) {
    await withFerry(config(dead, { failOpen, timeout: "2s" }), async (f) => {
      const c = await open(f);
      try {
        assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
        assert.equal((await c.cmd("RCPT TO:<strict@example.test>"))?.code, 250);
        assert.equal((await c.cmd("DATA"))?.code, 354);
        await c.send(body("hello"));
        const r = await c.reply(10_000);
        if (failOpen) {
          assert.equal(r?.code, 250, r?.text);
          assert.ok(f.memlog.has("(failOpen: delivered)"));
        } else {
          assert.equal(r?.code, 451, r?.text);
          assert.match(r!.text, /^4\.3\.0 /);
          assert.ok(f.memlog.has(/rspamd failed for <strict@example\.test>: rspamd http/));
        }
      } finally {
        c.close();
      }
    });
  }
});
