/** PIPELINING (RFC 2920) and ESMTP parameter checks (RFC 1870, 3461) over the wire, with a raw client. */

import assert from "node:assert/strict";
import { RawClient, withFerry } from "../helpers/ferry.ts";

async function greeted(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  assert.equal((await c.reply())?.code, 220);
  assert.equal((await c.cmd("EHLO pipe.test"))?.code, 250);
  return c;
}

Deno.test("50 pipelined transactions in one write get 150 replies, in order", async () => {
  await withFerry({}, async (f) => {
    const c = await greeted(f.port);
    try {
      let burst = "";
      for (let i = 0; i < 50; i++) {
        burst += `MAIL FROM:<s${i}@sender.test>\r\nRCPT TO:<${i % 2 ? "r" : "x"}${i}@${
          i % 2 ? "example" : "elsewhere"
        }.test>\r\nRSET\r\n`;
      }
      await c.send(burst);
      for (let i = 0; i < 50; i++) {
        assert.equal((await c.reply())?.code, 250, `MAIL ${i}`);
        assert.equal((await c.reply())?.code, i % 2 ? 250 : 550, `RCPT ${i}`);
        assert.equal((await c.reply())?.text, "2.0.0 Reset OK", `RSET ${i}`);
      }
      assert.equal((await c.cmd("NOOP"))?.code, 250);
    } finally {
      c.close();
    }
  });
});

Deno.test("message text sent before the 354 is a synchronisation error: 554 5.5.0, closed, nothing spooled", async () => {
  await withFerry({}, async (f) => {
    const c = await greeted(f.port);
    try {
      await c.send(
        "MAIL FROM:<s@sender.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\nSubject: eager\r\n\r\nx\r\n.\r\n",
      );
      assert.equal((await c.reply())?.code, 250);
      assert.equal((await c.reply())?.code, 250);
      const r = await c.reply();
      assert.equal(r?.code, 554);
      assert.match(r!.text, /^5\.5\.0 /);
      assert.ok(await c.closed());
      assert.equal(await f.spool.count(), 0);
      assert.ok(f.memlog.has("pipelined input after DATA (554 5.5.0 SMTP synchronization error)"));
    } finally {
      c.close();
    }
  });
});

Deno.test("the end of data, a new transaction and QUIT in one write are all answered and both messages kept", async () => {
  await withFerry({}, async (f) => {
    const c = await greeted(f.port);
    try {
      await c.send("MAIL FROM:<s@sender.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\n");
      for (const code of [250, 250, 354]) assert.equal((await c.reply())?.code, code);
      await c.send(
        "Subject: one\r\n\r\n1\r\n.\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\n",
      );
      for (const code of [250, 250, 250, 354]) assert.equal((await c.reply())?.code, code);
      await c.send("Subject: two\r\n\r\n2\r\n.\r\nQUIT\r\n");
      assert.equal((await c.reply())?.code, 250);
      assert.equal((await c.reply())?.code, 221);
      assert.ok(await c.closed());
      assert.equal(await f.spool.count(), 2);
    } finally {
      c.close();
    }
  });
});

Deno.test("EHLO pipelined with a following command is a synchronisation error", async () => {
  await withFerry({}, async (f) => {
    const c = await greeted(f.port);
    try {
      // A second EHLO (ESMTP known) must still end its group: its answer comes, then the 554.
      await c.send("EHLO again.test\r\nNOOP\r\n");
      assert.equal((await c.reply())?.code, 250);
      assert.equal((await c.reply())?.code, 554);
      assert.ok(await c.closed());
    } finally {
      c.close();
    }
  });

  await withFerry({}, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      // Before EHLO nothing allows pipelining, so the group is refused as a whole.
      await c.send("EHLO pipe.test\r\nMAIL FROM:<s@sender.test>\r\n");
      assert.equal((await c.reply())?.code, 554);
      assert.ok(await c.closed());
    } finally {
      c.close();
    }
  });
});

Deno.test("bad DSN and SIZE parameters get 501 or 555 and never open a transaction", async () => {
  await withFerry({}, async (f) => {
    const c = await greeted(f.port);
    try {
      const badMail: [string, number][] = [
        ["RET=BOGUS", 501],
        ["ENVID=" + "a".repeat(101), 501],
        ["ENVID=bad+ZZ", 501],
        ["SIZE=12x", 501],
        ["SIZE=1 SIZE=2", 501],
        ["BODY=BINARYMIME", 501],
        ["FOO=bar", 555],
      ];
      for (const [param, code] of badMail) {
        const r = await c.cmd(`MAIL FROM:<s@sender.test> ${param}`);
        assert.equal(r?.code, code, `${param}: ${r?.code} ${r?.text}`);
      }
      // None of them opened a transaction.
      assert.equal((await c.cmd("RCPT TO:<r@example.test>"))?.code, 503);
    } finally {
      c.close();
    }
  });
});

Deno.test("bad NOTIFY and ORCPT parameters are refused per recipient with 501", async () => {
  await withFerry({ limits: { badCommands: 50 } }, async (f) => {
    const c = await greeted(f.port);
    try {
      assert.equal((await c.cmd("MAIL FROM:<s@sender.test> RET=FULL ENVID=x+2By"))?.code, 250);
      const bad = [
        "NOTIFY=NEVER,SUCCESS",
        "NOTIFY=SOMETIMES",
        "NOTIFY=SUCCESS,SUCCESS",
        "ORCPT=rfc822",
        "ORCPT=rfc822;a+ZZb@example.test",
        "ORCPT=rfc822;a+0Ab@example.test",
        "ORCPT=;a@example.test",
      ];
      for (const p of bad) {
        const r = await c.cmd(`RCPT TO:<r@example.test> ${p}`);
        assert.equal(r?.code, 501, `${p}: ${r?.code} ${r?.text}`);
      }
      assert.equal(
        (await c.cmd("RCPT TO:<r@example.test> NOTIFY=never ORCPT=RFC822;r@example.test"))?.code,
        250,
      );
      assert.equal((await c.cmd("DATA"))?.code, 354);
      const r = await c.cmd("Subject: dsn\r\n\r\nx\r\n.");
      const env = await f.spool.get(/id=(\S+)/.exec(r!.text)![1]);
      assert.equal(env?.ret, "FULL");
      assert.equal(env?.envid, "x+y");
      assert.deepEqual(env?.recipients[0].notify, ["NEVER"]);
      assert.deepEqual(env?.recipients[0].orcpt, { type: "RFC822", address: "r@example.test" });
    } finally {
      c.close();
    }
  });
});

Deno.test("with dsn.advertiseHosts empty, DSN is not offered and its parameters are refused", async () => {
  await withFerry({ dsn: { advertiseHosts: [] } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      const ehlo = await c.cmd("EHLO pipe.test");
      assert.ok(!ehlo!.lines.some((l) => /\bDSN\b/.test(l)), ehlo!.text);
      assert.equal((await c.cmd("MAIL FROM:<s@sender.test> RET=HDRS"))?.code, 555);
      assert.equal((await c.cmd("MAIL FROM:<s@sender.test>"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<r@example.test> NOTIFY=SUCCESS"))?.code, 555);
    } finally {
      c.close();
    }
  });
});

Deno.test("a source route in MAIL and RCPT is accepted and stripped (RFC 5321 C)", async () => {
  await withFerry({}, async (f) => {
    const c = await greeted(f.port);
    try {
      assert.equal((await c.cmd("MAIL FROM:<@hop.test:s@sender.test>"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<@ferry.test:r@example.test>"))?.code, 250);
      assert.equal((await c.cmd("DATA"))?.code, 354);
      const r = await c.cmd("Subject: route\r\n\r\nx\r\n.");
      const env = await f.spool.get(/id=(\S+)/.exec(r!.text)![1]);
      assert.equal(env?.sender, "s@sender.test");
      assert.deepEqual(env?.recipients.map((x) => x.address), ["r@example.test"]);
    } finally {
      c.close();
    }
  });
});

Deno.test("a recipient given twice is kept once of a recipient given twice, so it is not delivered twice", async () => {
  await withFerry({}, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      await c.cmd("EHLO client.test");
      await c.cmd("MAIL FROM:<a@x.test>");
      assert.equal((await c.cmd("RCPT TO:<b@example.test>"))?.code, 250);
      const again = await c.cmd("RCPT TO:<b@example.test>");
      assert.equal(again?.code, 250);
      assert.match(again!.text, /duplicate/);
      await c.cmd("DATA");
      const r = await c.cmd("Subject: x\r\n\r\nbody\r\n.");
      const id = /id=(\S+)/.exec(r!.text)![1];
      assert.deepEqual((await f.spool.get(id))?.recipients.map((x) => x.address), ["b@example.test"]);
    } finally {
      c.close();
    }
  });
});
