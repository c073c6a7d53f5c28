/**
 * Open-relay attempts over the wire. The harness's relay.clients is 192.0.2.0/24, so 127.0.0.1 is an
 * untrusted client and may only send to relay.domains (example.test).
 */

import assert from "node:assert/strict";
import { RawClient, withFerry } from "../helpers/ferry.ts";

async function rcptReplies(port: number, recipients: string[]): Promise<{ code: number; text: string }[]> {
  const c = await RawClient.connect(port);
  try {
    assert.equal((await c.reply())?.code, 220);
    assert.equal((await c.cmd("EHLO relay.test"))?.code, 250);
    const out: { code: number; text: string }[] = [];
    for (const rcpt of recipients) {
      // A fresh transaction for each, so the recipient limit never plays a part.
      assert.equal((await c.cmd("MAIL FROM:<probe@sender.test>"))?.code, 250);
      const r = await c.cmd(`RCPT TO:${rcpt}`);
      assert.ok(r, `no reply for ${rcpt}`);
      out.push({ code: r.code, text: r.text });
      assert.equal((await c.cmd("RSET"))?.code, 250);
    }
    return out;
  } finally {
    c.close();
  }
}

const RELAY_FORMS = [
  "<user%evil.test@example.test>",
  "<evil.test!user@example.test>",
  '<"user@evil.test"@example.test>',
  "<@example.test:user@evil.test>",
  "<@example.test,@other.test:user@evil.test>",
  "<user@[127.0.0.1]>",
  "<user@evil.test.>",
  "<USER@EVIL.TEST>",
  "<user@example.test.evil.test>",
  "<user@evilexample.test>",
  "<user@sub.example.test>",
  '<"user%evil.test"@example.test>',
];

Deno.test("every open-relay form from an untrusted client is refused with 550 5.7.1", async () => {
  await withFerry({}, async (f) => {
    const replies = await rcptReplies(f.port, RELAY_FORMS);
    replies.forEach((r, i) => {
      assert.equal(r.code, 550, `${RELAY_FORMS[i]} → ${r.code} ${r.text}`);
      assert.match(r.text, /^5\.7\.1 /, RELAY_FORMS[i]);
    });
    assert.ok(f.memlog.has("relay not permitted for <user%evil.test@example.test>"));
    assert.ok(f.memlog.has(/rejected RCPT <user@evil\.test> F=<probe@sender\.test>: 550 5\.7\.1/));
  });
});

Deno.test("a relay domain in any letter case and with a trailing dot is accepted; so is bare postmaster", async () => {
  await withFerry({}, async (f) => {
    const ok = [
      "<User@Example.Test.>",
      "<user@EXAMPLE.TEST>",
      "<first.last+tag@example.test>",
      "<postmaster>",
    ];
    const replies = await rcptReplies(f.port, ok);
    replies.forEach((r, i) => assert.equal(r.code, 250, `${ok[i]} → ${r.code} ${r.text}`));
  });
});

Deno.test("a message with accepted and refused recipients is stored for the accepted one only", async () => {
  await withFerry({}, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      assert.equal((await c.cmd("EHLO relay.test"))?.code, 250);
      await c.send(
        "MAIL FROM:<p@sender.test>\r\nRCPT TO:<user%evil.test@example.test>\r\n" +
          "RCPT TO:<good@example.test>\r\nDATA\r\n",
      );
      const codes = [];
      for (let i = 0; i < 4; i++) codes.push((await c.reply())?.code);
      assert.deepEqual(codes, [250, 550, 250, 354]);
      const r = await c.cmd("Subject: s\r\n\r\nx\r\n.");
      assert.equal(r?.code, 250);
      const [{ envelope }] = await f.spool.list();
      assert.deepEqual(envelope.recipients.map((x) => x.address), ["good@example.test"]);
    } finally {
      c.close();
    }
  });
});

Deno.test("an untrusted client whose every recipient was refused gets 554 at DATA, never a 354", async () => {
  await withFerry({}, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      assert.equal((await c.cmd("EHLO relay.test"))?.code, 250);
      await c.send("MAIL FROM:<p@sender.test>\r\nRCPT TO:<v@evil.test>\r\nDATA\r\n");
      const codes = [];
      for (let i = 0; i < 3; i++) codes.push((await c.reply())?.code);
      assert.deepEqual(codes, [250, 550, 554]);
      // The message text that follows is read as commands, each refused, and never stored.
      assert.equal((await c.cmd("Subject: x"))?.code, 500);
      assert.equal(await f.spool.count(), 0);
    } finally {
      c.close();
    }
  });
});

Deno.test("a client in relay.clients may send to any domain, literal or routed form", async () => {
  await withFerry({ relay: { domains: ["example.test"], clients: ["127.0.0.0/8"] } }, async (f) => {
    const any = ["<someone@elsewhere.test>", "<USER@EVIL.TEST>", "<user@[127.0.0.1]>", "<user@example.test>"];
    const replies = await rcptReplies(f.port, any);
    replies.forEach((r, i) => assert.equal(r.code, 250, `${any[i]} → ${r.code} ${r.text}`));
  });
});

Deno.test("relay.clients may be a function host list that decides per client address", async () => {
  const seen: string[] = [];
  const clients = (s: { ip?: string }) => {
    seen.push(s.ip ?? "");
    return s.ip === "127.0.0.1";
  };
  await withFerry({ relay: { domains: [], clients } }, async (f) => {
    const [r] = await rcptReplies(f.port, ["<someone@elsewhere.test>"]);
    assert.equal(r.code, 250);
    assert.deepEqual(seen, ["127.0.0.1"]);
  });
});
