/**
 * SMTP smuggling over the wire: a message that hides a second transaction behind a non-standard
 * end-of-data sequence (LF.LF, LF.CRLF, CR.CR, CRLF.CR, CR.CRLF) must never become two messages.
 */

import assert from "node:assert/strict";
import { RawClient, withFerry } from "../helpers/ferry.ts";

const VARIANTS: [string, string][] = [
  ["LF.LF", "\n.\n"],
  ["LF.CRLF", "\n.\r\n"],
  ["CR.CR", "\r.\r"],
  ["CRLF.CR", "\r\n.\r"],
  ["CR.CRLF", "\r.\r\n"],
];

function payload(variant: string): string {
  return "Subject: x\r\n\r\nfirst" + variant +
    "MAIL FROM:<evil@x>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n";
}

async function startTransaction(c: RawClient): Promise<void> {
  assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
  assert.equal((await c.cmd("RCPT TO:<b@example.test>"))?.code, 250);
  assert.equal((await c.cmd("DATA"))?.code, 354);
}

/** Sends the payload, then NOOP: the reply after the payload's must be NOOP's, proving there was only one. */
async function sendAndCount(c: RawClient, variant: string): Promise<{ code: number; text: string }> {
  await c.send(payload(variant));
  const r = await c.reply();
  assert.ok(r);
  const noop = await c.cmd("NOOP");
  assert.equal(noop?.code, 250, `an extra reply followed the smuggling payload: ${noop?.code} ${noop?.text}`);
  assert.equal(noop?.text, "2.0.0 OK");
  return r;
}

Deno.test("reject mode: each smuggling variant gets exactly one 550 5.6.0 and nothing is spooled", async () => {
  await withFerry({}, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      assert.equal((await c.cmd("EHLO smuggler.test"))?.code, 250);
      for (const [name, variant] of VARIANTS) {
        await startTransaction(c);
        const r = await sendAndCount(c, variant);
        assert.equal(r.code, 550, `${name}: ${r.code} ${r.text}`);
        assert.match(r.text, /^5\.6\.0 /, name);
        assert.equal(await f.spool.count(), 0, name);
      }
      assert.ok(f.memlog.has("message content refused"));
      // The connection still works for a clean message.
      await startTransaction(c);
      const ok = await c.cmd("Subject: clean\r\n\r\nclean body\r\n.");
      assert.equal(ok?.code, 250);
      assert.equal(await f.spool.count(), 1);
      const [{ envelope }] = await f.spool.list();
      assert.equal(envelope.sender, "a@sender.test");
    } finally {
      c.close();
    }
  });
});

Deno.test("normalize mode: each variant yields one 250 and one message holding the smuggled lines as text", async () => {
  await withFerry({ smtp: { bareLineEndings: "normalize" } }, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      assert.equal((await c.cmd("EHLO smuggler.test"))?.code, 250);
      for (const [name, variant] of VARIANTS) {
        const before = await f.spool.count();
        await startTransaction(c);
        const r = await sendAndCount(c, variant);
        assert.equal(r.code, 250, `${name}: ${r.code} ${r.text}`);
        assert.equal(await f.spool.count(), before + 1, name);
        const id = /id=(\S+)/.exec(r.text)![1];
        const env = await f.spool.get(id);
        assert.equal(env?.sender, "a@sender.test", name);
        assert.deepEqual(env?.recipients.map((x) => x.address), ["b@example.test"], name);
        const data = new TextDecoder().decode(await f.spool.readData(id));
        assert.ok(
          data.includes("\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nsmuggled\r\n"),
          name,
        );
        // Every line ending is CRLF now: no bare CR or LF is left for a later hop to misread.
        assert.ok(!/\r(?!\n)|(?<!\r)\n/.test(data), `${name}: ${JSON.stringify(data)}`);
        assert.ok(data.endsWith("smuggled\r\n"), name);
      }
      assert.ok(!(await f.spool.list()).some((e) => e.envelope.sender === "evil@x"));
    } finally {
      c.close();
    }
  });
});

Deno.test("a smuggling payload split across many small writes is still one refused message", async () => {
  await withFerry({}, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      assert.equal((await c.cmd("EHLO smuggler.test"))?.code, 250);
      await startTransaction(c);
      const bytes = new TextEncoder().encode(payload("\r\n.\r"));
      for (let i = 0; i < bytes.length; i += 3) {
        await c.send(bytes.subarray(i, i + 3));
        if (i % 30 === 0) await new Promise((r) => setTimeout(r, 1));
      }
      const r = await c.reply();
      assert.equal(r?.code, 550);
      assert.equal((await c.cmd("NOOP"))?.code, 250);
      assert.equal(await f.spool.count(), 0);
    } finally {
      c.close();
    }
  });
});

Deno.test("BDAT content with bare line endings is refused in reject mode with one reply", async () => {
  await withFerry({}, async (f) => {
    const c = await RawClient.connect(f.port);
    try {
      await c.reply();
      assert.equal((await c.cmd("EHLO smuggler.test"))?.code, 250);
      assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<b@example.test>"))?.code, 250);
      const body = "Subject: x\r\n\r\nfirst\n.\nsecond\r\n";
      const r = await c.cmd(`BDAT ${body.length} LAST\r\n${body}`.slice(0, -2));
      assert.equal(r?.code, 550);
      assert.equal((await c.cmd("NOOP"))?.code, 250);
      assert.equal(await f.spool.count(), 0);
    } finally {
      c.close();
    }
  });
});
