/** Session limits over the wire: line lengths, message size, recipients, bad commands. */

import assert from "node:assert/strict";
import { RawClient, withFerry } from "../helpers/ferry.ts";

async function greeted(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  assert.equal((await c.reply())?.code, 220);
  assert.equal((await c.cmd("EHLO limits.test"))?.code, 250);
  return c;
}

Deno.test("an overlong command line gets 500 5.5.2 and the rest of the line is not run as a command", async () => {
  await withFerry({}, async (f) => {
    const c = await greeted(f.port);
    try {
      // 600 octets; the tail looks like a command, and must not be obeyed.
      const r = await c.cmd("NOOP " + "x".repeat(580) + " QUIT");
      assert.equal(r?.code, 500);
      assert.match(r!.text, /^5\.5\.2 /);
      assert.equal((await c.cmd("NOOP"))?.code, 250);
      // A line of exactly 512 octets with CRLF is fine.
      assert.equal((await c.cmd("NOOP " + "y".repeat(505)))?.code, 250);
      assert.equal((await c.cmd("NOOP " + "y".repeat(506)))?.code, 500);
      assert.ok(f.memlog.has("command line too long"));
    } finally {
      c.close();
    }
  });
});

Deno.test("a text line over 1000 octets gets 550 5.6.0 and nothing is spooled; 1000 with CRLF is fine", async () => {
  await withFerry({}, async (f) => {
    const c = await greeted(f.port);
    try {
      // A line that starts with a dot is sent with one more (dot-stuffing); RFC 5321 4.5.3.1.6 does not count
      // it, so 998 octets of text after the stuffing dot (1,001 on the wire with CRLF) are fine.
      const lines: [string, number][] = [
        ["z".repeat(999), 550],
        ["z".repeat(998), 250],
        [".." + "z".repeat(998), 550],
        [".." + "z".repeat(997), 250],
      ];
      let stored = 0;
      for (const [line, code] of lines) {
        assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
        assert.equal((await c.cmd("RCPT TO:<b@example.test>"))?.code, 250);
        assert.equal((await c.cmd("DATA"))?.code, 354);
        const r = await c.cmd(`Subject: long\r\n\r\n${line}\r\nshort\r\n.`);
        assert.equal(r?.code, code, `line of ${line.length} octets on the wire`);
        if (code === 550) {
          assert.match(r!.text, /^5\.6\.0 /);
          assert.equal(await f.spool.count(), stored, "nothing spooled");
        } else stored++;
      }
      assert.equal(await f.spool.count(), 2);
    } finally {
      c.close();
    }
  });
});

Deno.test("messageSize: SIZE= over the advertised limit gets 552 5.3.4 at MAIL; the exact limit is accepted", async () => {
  await withFerry({ limits: { messageSize: "10KB" } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      const ehlo = await c.cmd("EHLO limits.test");
      const max = Number(/^SIZE (\d+)$/m.exec(ehlo!.text)![1]);
      assert.ok(max >= 10_000 && max <= 10_240, String(max));
      const over = await c.cmd(`MAIL FROM:<a@sender.test> SIZE=${max + 1}`);
      assert.equal(over?.code, 552);
      assert.match(over!.text, /^5\.3\.4 /);
      assert.equal((await c.cmd(`MAIL FROM:<a@sender.test> SIZE=${max}`))?.code, 250);
      assert.equal((await c.cmd("RSET"))?.code, 250);
      assert.equal((await c.cmd("MAIL FROM:<a@sender.test> SIZE=abc"))?.code, 501);
    } finally {
      c.close();
    }
  });
});

Deno.test("messageSize: content one octet over the limit gets 552 5.3.4 and nothing is spooled; exactly the limit is stored", async () => {
  await withFerry({ limits: { messageSize: "10KB" } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      const ehlo = await c.cmd("EHLO limits.test");
      const max = Number(/^SIZE (\d+)$/m.exec(ehlo!.text)![1]);
      const head = "Subject: big\r\n\r\n";
      for (const extra of [1, 0]) {
        // Lines of 78 + CRLF, padded so that the content is max + extra octets.
        let body = "";
        while (head.length + body.length + 80 <= max + extra) body += "b".repeat(78) + "\r\n";
        const rest = max + extra - head.length - body.length;
        body += "c".repeat(rest - 2) + "\r\n";
        assert.equal(head.length + body.length, max + extra);
        // SIZE claims less than is sent: the content check must still apply.
        assert.equal((await c.cmd("MAIL FROM:<a@sender.test> SIZE=100"))?.code, 250);
        assert.equal((await c.cmd("RCPT TO:<b@example.test>"))?.code, 250);
        assert.equal((await c.cmd("DATA"))?.code, 354);
        const r = await c.cmd(head + body + ".");
        if (extra) {
          assert.equal(r?.code, 552);
          assert.match(r!.text, /^5\.3\.4 /);
          assert.equal(await f.spool.count(), 0);
        } else {
          assert.equal(r?.code, 250, r?.text);
        }
      }
      assert.equal(await f.spool.count(), 1);
    } finally {
      c.close();
    }
  });
});

Deno.test("recipients: the fourth RCPT over a limit of 3 gets 452 4.5.3 and the message goes to the first three", async () => {
  await withFerry({ limits: { recipients: 3 } }, async (f) => {
    const c = await greeted(f.port);
    try {
      assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
      for (const n of [1, 2, 3]) assert.equal((await c.cmd(`RCPT TO:<r${n}@example.test>`))?.code, 250);
      const fourth = await c.cmd("RCPT TO:<r4@example.test>");
      assert.equal(fourth?.code, 452);
      assert.match(fourth!.text, /^4\.5\.3 /);
      assert.equal((await c.cmd("DATA"))?.code, 354);
      const r = await c.cmd("Subject: many\r\n\r\nx\r\n.");
      assert.equal(r?.code, 250);
      const [{ envelope }] = await f.spool.list();
      assert.deepEqual(envelope.recipients.map((x) => x.address), [
        "r1@example.test",
        "r2@example.test",
        "r3@example.test",
      ]);
    } finally {
      c.close();
    }
  });
});

Deno.test("badCommands: the third bad command is answered, then 421 and the connection closes", async () => {
  await withFerry({ limits: { badCommands: 3 } }, async (f) => {
    const c = await greeted(f.port);
    try {
      assert.equal((await c.cmd("FOO"))?.code, 500);
      assert.equal((await c.cmd("MAIL FROM:bad"))?.code, 501);
      // Good commands in between do not reset the count.
      assert.equal((await c.cmd("NOOP"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<b@example.test>"))?.code, 503);
      const r = await c.reply();
      assert.equal(r?.code, 421);
      assert.ok(await c.closed());
      assert.ok(f.memlog.has("too many errors"));
    } finally {
      c.close();
    }
  });
});

Deno.test("HTTP spoken to the SMTP port is refused with 554 and closed", async () => {
  await withFerry({}, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      const r = await c.cmd("GET / HTTP/1.1");
      assert.equal(r?.code, 554);
      assert.ok(await c.closed());
      // The log line carries the reply as it went on the wire, as every refusal's does.
      assert.ok(f.memlog.has('HTTP command "GET" on SMTP port (554 5.7.0 This is an SMTP server)'));
    } finally {
      c.close();
    }
  });
});

Deno.test("unsynchronised pipelining without EHLO (after HELO) ends the session with 554 5.5.0", async () => {
  await withFerry({}, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      assert.equal((await c.cmd("HELO old.test"))?.code, 250);
      await c.send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<b@example.test>\r\n");
      const r = await c.reply();
      assert.equal(r?.code, 554);
      assert.match(r!.text, /^5\.5\.0 /);
      assert.ok(await c.closed());
      assert.equal(await f.spool.count(), 0);
    } finally {
      c.close();
    }
  });
});

Deno.test("limits.dataMemory: a message that would pass the memory budget gets 452 4.3.1 and is accepted once room returns", async () => {
  await withFerry({ limits: { messageSize: "600KB", dataMemory: "900KB" } }, async (f) => {
    const body = ("y".repeat(98) + "\r\n").repeat(5000); // 500,000 octets
    const begin = async (c: RawClient) => {
      assert.equal((await c.cmd(`MAIL FROM:<a@sender.test> SIZE=${body.length + 20}`))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<b@example.test>"))?.code, 250);
      assert.equal((await c.cmd("DATA"))?.code, 354);
    };
    const a = await greeted(f.port);
    const b = await greeted(f.port);
    try {
      // A has its room (its DATA was answered) and sends half; B's declared size no longer fits beside it.
      await begin(a);
      await a.send(`Subject: a\r\n\r\n${body.slice(0, 250_000)}`);
      await begin(b);
      const refused = await b.cmd(`Subject: b\r\n\r\n${body}.`);
      assert.equal(refused?.code, 452);
      assert.match(refused!.text, /^4\.3\.1 /);
      assert.ok(f.memlog.has("message content refused"), "logged");
      assert.equal(await f.spool.count(), 0);
      // A completes; its data went to the spool, and B's retry fits.
      const stored = await a.cmd(`${body.slice(250_000)}.`);
      assert.equal(stored?.code, 250, stored?.text);
      await begin(b);
      assert.equal((await b.cmd(`Subject: b\r\n\r\n${body}.`))?.code, 250);
      assert.equal(await f.spool.count(), 2);
    } finally {
      a.close();
      b.close();
    }
  });
});
