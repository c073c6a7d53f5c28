/** The log lines an inbound connection writes for refusals carry the reply exactly as it went on the wire. */

import assert from "node:assert/strict";
import { RawClient, withFerry } from "../helpers/ferry.ts";

Deno.test("an undeclared UTF-8 recipient is refused 553 5.6.7 and the log line carries '553 5.6.7'", async () => {
  await withFerry({}, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      assert.equal((await c.reply())?.code, 220);
      assert.equal((await c.cmd("EHLO client.test"))?.code, 250);
      assert.equal((await c.cmd("MAIL FROM:<a@client.test>"))?.code, 250);
      const r = await c.cmd("RCPT TO:<j\u00f6rg@example.test>");
      assert.equal(r?.code, 553);
      assert.match(r!.text, /^5\.6\.7 /);
      assert.equal((await c.cmd("QUIT"))?.code, 221);
    } finally {
      c.close();
    }
    const line = f.memlog.lines.map((l) => l.text).find((t) => t.includes("bad RCPT"));
    assert.ok(line, "a log line for the refused RCPT");
    assert.match(line, /\(553 5\.6\.7 Non-ASCII address needs SMTPUTF8\)/);
  });
});

Deno.test("a refusal by policy is logged with its code and enhanced code", async () => {
  await withFerry({
    policy: { mail: [(c) => c.reject("Sender blocked", 550, "5.7.26")] },
  }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      await c.cmd("EHLO client.test");
      const r = await c.cmd("MAIL FROM:<a@client.test>");
      assert.equal(r?.code, 550);
      assert.match(r!.text, /^5\.7\.26 Sender blocked/);
    } finally {
      c.close();
    }
    assert.ok(f.memlog.has(/rejected MAIL FROM:<a@client\.test>: 550 5\.7\.26 Sender blocked/));
  });
});

Deno.test("refusals the session decides itself (SIZE over the limit, too many recipients) are logged with their codes", async () => {
  await withFerry({ limits: { messageSize: "1MB", recipients: 1 } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      await c.cmd("EHLO client.test");
      const big = await c.cmd("MAIL FROM:<a@client.test> SIZE=99999999");
      assert.equal(big?.code, 552);
      assert.match(big!.text, /^5\.3\.4 /);
      assert.equal((await c.cmd("MAIL FROM:<a@client.test>"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<one@example.test>"))?.code, 250);
      const many = await c.cmd("RCPT TO:<two@example.test>");
      assert.equal(many?.code, 452);
      assert.match(many!.text, /^4\.5\.3 /);
      assert.equal((await c.cmd("QUIT"))?.code, 221);
    } finally {
      c.close();
    }
    assert.ok(
      f.memlog.has(/rejected MAIL FROM:<a@client\.test> SIZE=99999999: 552 5\.3\.4 Message size exceeds/),
      "the 552 is logged",
    );
    assert.ok(
      f.memlog.has(/rejected RCPT <two@example\.test> F=<a@client\.test>: 452 4\.5\.3 Too many recipients/),
    );
  });
});
