/**
 * The data stage and what policy leaves in the spool: discard, addHeader, per-message variables saved in
 * envelope.policy, connection variables; and msg:received handlers, which can never break SMTP.
 */

import assert from "node:assert/strict";
import { RawClient, withFerry } from "../helpers/ferry.ts";
import { waitFor } from "../helpers/downstream.ts";
import type { DataContext, MailContext } from "../../src/policy/context.ts";
import type { MsgReceivedEvent } from "../../src/events/types.ts";

const dec = new TextDecoder();

/** Sends one message on an open session; returns the final reply. */
async function send(c: RawClient, sender: string, body = "Subject: t\r\n\r\nbody\r\n") {
  assert.equal((await c.cmd(`MAIL FROM:<${sender}>`))?.code, 250);
  assert.equal((await c.cmd("RCPT TO:<r@example.test>"))?.code, 250);
  assert.equal((await c.cmd("DATA"))?.code, 354);
  return await c.cmd(body + ".");
}

async function session(port: number): Promise<RawClient> {
  const c = await RawClient.connect(port);
  assert.equal((await c.reply())?.code, 220);
  assert.equal((await c.cmd("EHLO data.test"))?.code, 250);
  return c;
}

Deno.test("c.discard() at data answers 250 with an id but nothing is spooled, and a log line says so", async () => {
  const blackhole = async function blackhole(c: DataContext, next: () => Promise<void>) {
    if (c.headers.some((h) => h.name.toLowerCase() === "subject" && h.value.includes("[spam]"))) c.discard();
    await next();
  };
  await withFerry({ policy: { data: [blackhole] } }, async (f) => {
    const c = await session(f.port);
    try {
      const r = await send(c, "s@sender.test", "Subject: [spam] buy now\r\n\r\nx\r\n");
      assert.equal(r?.code, 250);
      assert.match(r!.text, /^2\.0\.0 OK id=\S+/);
      assert.equal(await f.spool.count(), 0);
      assert.ok(f.memlog.has("message discarded by policy"));
      assert.ok(!f.memlog.has("<= s@sender.test"));
      // The next message on the same connection is kept.
      const ok = await send(c, "s@sender.test", "Subject: fine\r\n\r\nx\r\n");
      assert.equal(ok?.code, 250);
      assert.equal(await f.spool.count(), 1);
    } finally {
      c.close();
    }
  });
});

Deno.test("c.addHeader() at data puts the field at the top of the stored message, after Received", async () => {
  const tag = async function tag(c: DataContext, next: () => Promise<void>) {
    c.addHeader("X-Spam-Score", `${c.messageSize} octets, ${c.recipients.length} rcpt`);
    c.addHeader("X-Checked-By", "ferry-test");
    await next();
  };
  await withFerry({ policy: { data: [tag] } }, async (f) => {
    const c = await session(f.port);
    try {
      const body = "Subject: headers\r\n\r\nhello\r\n"; // 27 octets
      const r = await send(c, "s@sender.test", body);
      assert.equal(r?.code, 250);
      const id = /id=(\S+)/.exec(r!.text)![1];
      const data = dec.decode(await f.spool.readData(id));
      assert.match(
        data,
        /^Received: [^]*?\r\nX-Spam-Score: 27 octets, 1 rcpt\r\nX-Checked-By: ferry-test\r\nSubject: headers\r\n/,
      );
      assert.ok(data.endsWith(body));
      assert.equal((await f.spool.get(id))?.size, data.length);
    } finally {
      c.close();
    }
  });
});

Deno.test("c.addHeader() with a header-injection attempt is refused with 451 and nothing is spooled", async () => {
  const inject = async function inject(c: DataContext, next: () => Promise<void>) {
    c.addHeader("X-Note", "ok\r\nBcc: victim@example.test");
    await next();
  };
  await withFerry({ policy: { data: [inject] } }, async (f) => {
    const c = await session(f.port);
    try {
      const r = await send(c, "s@sender.test");
      assert.equal(r?.code, 451);
      assert.equal(await f.spool.count(), 0);
      assert.ok(f.memlog.has(/data policy step "inject" failed: Invalid header field/));
    } finally {
      c.close();
    }
  });
});

Deno.test("c.set() from mail, rcpt and data steps is saved in envelope.policy per message; connection scope persists", async () => {
  const score = async function score(c: MailContext, next: () => Promise<void>) {
    if (c.sender === "a@sender.test") c.set("spf", { result: "pass", domain: "sender.test" });
    c.set("notJson", () => "functions are not kept");
    const n = (c.get("messages") as number | undefined) ?? 0;
    c.set("messages", n + 1, { scope: "connection" });
    await next();
  };
  const rcptSeen = async function rcpt_seen(c: MailContext, next: () => Promise<void>) {
    c.set("rcptStep", c.get("spf") !== undefined ? "saw spf" : "no spf");
    await next();
  };
  const dataStep = async function data_step(c: DataContext, next: () => Promise<void>) {
    c.set("connMessages", c.get("messages") as number);
    await next();
  };
  await withFerry({ policy: { mail: [score], rcpt: [rcptSeen], data: [dataStep] } }, async (f) => {
    const c = await session(f.port);
    try {
      const r1 = await send(c, "a@sender.test");
      const r2 = await send(c, "b@sender.test");
      const e1 = await f.spool.get(/id=(\S+)/.exec(r1!.text)![1]);
      const e2 = await f.spool.get(/id=(\S+)/.exec(r2!.text)![1]);
      assert.deepEqual(e1?.policy, {
        spf: { result: "pass", domain: "sender.test" },
        rcptStep: "saw spf",
        connMessages: 1,
      });
      // Nothing of the first message's variables leaks into the second; connection variables persist.
      assert.deepEqual(e2?.policy, { rcptStep: "no spf", connMessages: 2 });
    } finally {
      c.close();
    }
  });
});

Deno.test("RSET forgets the message variables of the abandoned transaction", async () => {
  const mark = async function mark(c: MailContext, next: () => Promise<void>) {
    if (c.sender === "first@sender.test") c.set("first", true);
    await next();
  };
  await withFerry({ policy: { mail: [mark] } }, async (f) => {
    const c = await session(f.port);
    try {
      assert.equal((await c.cmd("MAIL FROM:<first@sender.test>"))?.code, 250);
      assert.equal((await c.cmd("RSET"))?.code, 250);
      const r = await send(c, "second@sender.test");
      const env = await f.spool.get(/id=(\S+)/.exec(r!.text)![1]);
      assert.equal(env?.policy, undefined);
    } finally {
      c.close();
    }
  });
});

Deno.test("a msg:received handler that throws: the client still gets 250, the message is spooled, the failure logged", async () => {
  await withFerry({
    events: {
      "msg:received": function boom() {
        throw new Error("boom");
      },
    },
  }, async (f) => {
    const c = await session(f.port);
    try {
      const r = await send(c, "s@sender.test");
      assert.equal(r?.code, 250);
      const id = /id=(\S+)/.exec(r!.text)![1];
      assert.ok(await f.spool.get(id));
      // The 250 does not wait for the handler: await its failure line.
      await waitFor(
        () => f.memlog.has(`event msg:received: handler boom failed: boom`),
        8000,
        "the handler's failure logged",
      );
      assert.equal((await c.cmd("NOOP"))?.code, 250);
    } finally {
      c.close();
    }
  });
});

Deno.test("a msg:received handler gets the id from the 250 reply and the stored envelope", async () => {
  const got: MsgReceivedEvent[] = [];
  await withFerry({ events: { "msg:received": (e: MsgReceivedEvent) => void got.push(e) } }, async (f) => {
    const c = await session(f.port);
    try {
      const r = await send(c, "events@sender.test");
      const id = /id=(\S+)/.exec(r!.text)![1];
      // The 250 does not wait for the handler: await it.
      await waitFor(() => got.length > 0, 8000, "the msg:received handler");
      assert.equal(got.length, 1);
      assert.equal(got[0].id, id);
      assert.equal(got[0].envelope.id, id);
      assert.equal(got[0].envelope.sender, "events@sender.test");
      assert.deepEqual(got[0].envelope.recipients.map((x) => x.address), ["r@example.test"]);
      assert.equal(got[0].envelope.client.helo, "data.test");
      assert.deepEqual(JSON.parse(JSON.stringify(got[0].envelope)), await f.spool.get(id));
    } finally {
      c.close();
    }
  });
});

Deno.test("a msg:received handler that never returns does not delay the 250", async () => {
  await withFerry({ events: { "msg:received": () => new Promise(() => {}) } }, async (f) => {
    const c = await session(f.port);
    try {
      const t0 = Date.now();
      const r = await send(c, "s@sender.test");
      assert.equal(r?.code, 250);
      assert.ok(Date.now() - t0 < 2000);
    } finally {
      c.close();
    }
  });
});
