/** PRDR (draft-hall-prdr-00) over the wire: 353, one reply per recipient, then the final reply. */

import assert from "node:assert/strict";
import { RawClient, withFerry } from "../helpers/ferry.ts";
import type { PolicyMiddleware } from "../../src/policy/context.ts";

const rejectSpam: PolicyMiddleware<"prdr"> = async function reject_spam_trap(c, next) {
  if (c.recipient.local.startsWith("trap")) c.reject("No thanks", 550, "5.7.1");
  await next();
};

async function open(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  assert.equal((await c.reply())?.code, 220);
  const ehlo = await c.cmd("EHLO prdr.test");
  assert.equal(ehlo?.code, 250);
  return c;
}

Deno.test("PRDR: one recipient refused after DATA, the other accepted, and the spool holds only the accepted one", async () => {
  await withFerry({ prdr: { enable: true }, policy: { prdr: [rejectSpam] } }, async (f) => {
    const c = await open(f.port);
    try {
      assert.equal((await c.cmd("MAIL FROM:<a@x> PRDR"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<ok@example.test>"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<trap@example.test>"))?.code, 250);
      assert.equal((await c.cmd("DATA"))?.code, 354);
      await c.send("Subject: prdr\r\n\r\nper recipient\r\n.\r\n");
      const r353 = await c.reply();
      assert.equal(r353?.code, 353);
      const first = await c.reply();
      const second = await c.reply();
      assert.equal(first?.code, 250);
      assert.match(first!.text, /<ok@example\.test>/);
      assert.equal(second?.code, 550);
      assert.match(second!.text, /^5\.7\.1 <trap@example\.test> No thanks/);
      const final = await c.reply();
      assert.equal(final?.code, 250);
      const id = /id=(\S+)/.exec(final!.text)![1];
      const env = await f.spool.get(id);
      assert.deepEqual(env?.recipients.map((r) => r.address), ["ok@example.test"]);
      assert.equal(await f.spool.count(), 1);
      // The connection goes on normally.
      assert.equal((await c.cmd("NOOP"))?.code, 250);
    } finally {
      c.close();
    }
  });
});

Deno.test("PRDR: when every recipient is refused the final reply is 550 5.7.1 and nothing is spooled", async () => {
  await withFerry({ prdr: { enable: true }, policy: { prdr: [rejectSpam] } }, async (f) => {
    const c = await open(f.port);
    try {
      await c.send(
        "MAIL FROM:<a@x> PRDR\r\nRCPT TO:<trap@example.test>\r\nRCPT TO:<trap2@example.test>\r\nDATA\r\n",
      );
      for (const code of [250, 250, 250, 354]) assert.equal((await c.reply())?.code, code);
      await c.send("Subject: prdr\r\n\r\nx\r\n.\r\n");
      assert.equal((await c.reply())?.code, 353);
      assert.equal((await c.reply())?.code, 550);
      assert.equal((await c.reply())?.code, 550);
      const final = await c.reply();
      assert.equal(final?.code, 550);
      assert.equal(final?.text, "5.7.1 No recipients accepted the message");
      assert.equal(await f.spool.count(), 0);
    } finally {
      c.close();
    }
  });
});

Deno.test("PRDR: with one recipient the prdr stage does not run and the reply is a plain 250 (no 353)", async () => {
  const seen: string[] = [];
  await withFerry({
    prdr: { enable: true },
    policy: {
      prdr: [async function note_prdr(c, next) {
        seen.push(c.recipient.address);
        await rejectSpam(c, next);
      }],
    },
  }, async (f) => {
    const c = await open(f.port);
    try {
      await c.send("MAIL FROM:<a@x> PRDR\r\nRCPT TO:<trap@example.test>\r\nDATA\r\n");
      for (const code of [250, 250, 354]) assert.equal((await c.reply())?.code, code);
      const r = await c.cmd("Subject: prdr\r\n\r\nx\r\n.");
      assert.equal(r?.code, 250);
      assert.match(r!.text, /^2\.0\.0 OK id=/);
      assert.deepEqual(seen, []);
      assert.equal(await f.spool.count(), 1);
    } finally {
      c.close();
    }
  });
});

Deno.test("PRDR: the prdr stage runs before the data stage, which sees only the recipients still accepted and the refused ones", async () => {
  const order: string[] = [];
  let dataSaw: { recipients: string[]; refused: string[]; checked: boolean } | undefined;
  await withFerry({
    prdr: { enable: true },
    policy: {
      prdr: [async function note_prdr(c, next) {
        order.push(`prdr ${c.recipient.address}`);
        await rejectSpam(c, next);
      }],
      data: [async function note_data(c, next) {
        order.push("data");
        dataSaw = {
          recipients: c.recipients.map((r) => r.address),
          refused: c.refused.map((r) => `${r.recipient.address} ${r.code} ${r.enhanced}`),
          checked: c.prdrChecked,
        };
        await next();
      }],
    },
  }, async (f) => {
    const c = await open(f.port);
    try {
      await c.send(
        "MAIL FROM:<a@x> PRDR\r\nRCPT TO:<ok@example.test>\r\nRCPT TO:<trap@example.test>\r\nDATA\r\n",
      );
      for (const code of [250, 250, 250, 354]) assert.equal((await c.reply())?.code, code);
      await c.send("Subject: prdr\r\n\r\nx\r\n.\r\n");
      for (const code of [353, 250, 550, 250]) assert.equal((await c.reply())?.code, code);
      assert.deepEqual(order, ["prdr ok@example.test", "prdr trap@example.test", "data"]);
      assert.deepEqual(dataSaw, {
        recipients: ["ok@example.test"],
        refused: ["trap@example.test 550 5.7.1"],
        checked: true,
      });
    } finally {
      c.close();
    }
  });
});

Deno.test("PRDR: a data-stage refusal after the per-recipient replies is the final reply and nothing is stored", async () => {
  await withFerry({
    prdr: { enable: true },
    policy: { prdr: [rejectSpam], data: [(c) => c.reject("Content refused", 550, "5.7.0")] },
  }, async (f) => {
    const c = await open(f.port);
    try {
      await c.send(
        "MAIL FROM:<a@x> PRDR\r\nRCPT TO:<ok@example.test>\r\nRCPT TO:<trap@example.test>\r\nDATA\r\n",
      );
      for (const code of [250, 250, 250, 354]) assert.equal((await c.reply())?.code, code);
      await c.send("Subject: prdr\r\n\r\nx\r\n.\r\n");
      for (const code of [353, 250, 550]) assert.equal((await c.reply())?.code, code);
      const final = await c.reply();
      assert.equal(final?.code, 550);
      assert.equal(final?.text, "5.7.0 Content refused");
      assert.equal(await f.spool.count(), 0);
      assert.equal((await c.cmd("NOOP"))?.code, 250);
    } finally {
      c.close();
    }
  });
});

Deno.test("PRDR: the mail and rcpt stages see whether MAIL asked for PRDR", async () => {
  const seen: string[] = [];
  await withFerry({
    prdr: { enable: true },
    policy: {
      mail: [async (c, next) => {
        seen.push(`mail ${c.prdr}`);
        await next();
      }],
      rcpt: [async (c, next) => {
        seen.push(`rcpt ${c.prdr}`);
        await next();
      }],
    },
  }, async (f) => {
    const c = await open(f.port);
    try {
      assert.equal((await c.cmd("MAIL FROM:<a@x> PRDR"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<ok@example.test>"))?.code, 250);
      assert.equal((await c.cmd("RSET"))?.code, 250);
      assert.equal((await c.cmd("MAIL FROM:<a@x>"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<ok@example.test>"))?.code, 250);
      assert.deepEqual(seen, ["mail true", "rcpt true", "mail false", "rcpt false"]);
    } finally {
      c.close();
    }
  });
});

Deno.test("PRDR: a prdr step that throws refuses that recipient with 451 4.3.0, not a 5xx", async () => {
  const broken: PolicyMiddleware<"prdr"> = function broken_lookup(c) {
    if (c.recipient.local === "b") throw new Error("lookup table gone");
    return Promise.resolve();
  };
  await withFerry({ prdr: { enable: true }, policy: { prdr: [broken] } }, async (f) => {
    const c = await open(f.port);
    try {
      await c.send(
        "MAIL FROM:<a@x> PRDR\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n",
      );
      for (const code of [250, 250, 250, 354]) assert.equal((await c.reply())?.code, code);
      await c.send("Subject: prdr\r\n\r\nx\r\n.\r\n");
      assert.equal((await c.reply())?.code, 353);
      assert.equal((await c.reply())?.code, 250);
      const b = await c.reply();
      assert.equal(b?.code, 451);
      assert.match(b!.text, /^4\.3\.0 /);
      assert.equal((await c.reply())?.code, 250);
      assert.ok(f.memlog.has(`prdr policy step "broken_lookup" failed: lookup table gone`));
    } finally {
      c.close();
    }
  });
});

Deno.test("PRDR is not advertised and the MAIL parameter is refused when prdr.enable is off", async () => {
  await withFerry({}, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      const ehlo = await c.cmd("EHLO prdr.test");
      assert.ok(!ehlo!.lines.some((l) => /PRDR/.test(l)));
      const r = await c.cmd("MAIL FROM:<a@x> PRDR");
      assert.equal(r?.code, 555);
    } finally {
      c.close();
    }
  });
});

Deno.test("PRDR: when every recipient is refused temporarily, the final reply is temporary too", async () => {
  await withFerry({
    prdr: { enable: true },
    policy: { prdr: [(c) => c.defer("Try later")] },
  }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      await c.cmd("EHLO client.test");
      assert.equal((await c.cmd("MAIL FROM:<a@x.test> PRDR"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<one@example.test>"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<two@example.test>"))?.code, 250);
      assert.equal((await c.cmd("DATA"))?.code, 354);
      assert.equal((await c.cmd("Subject: x\r\n\r\nbody\r\n."))?.code, 353);
      assert.equal((await c.reply())?.code, 451);
      assert.equal((await c.reply())?.code, 451);
      const final = await c.reply();
      assert.equal(final?.code, 451);
      assert.match(final!.text, /^4\.7\.1 /);
      assert.equal((await f.spool.list()).length, 0);
    } finally {
      c.close();
    }
  });
});
