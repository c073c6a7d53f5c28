/** The Received: trace field (RFC 5321 4.4, RFC 3848 protocol names) and the `<=` reception log line. */

import assert from "node:assert/strict";
import { RawClient, withFerry } from "../helpers/ferry.ts";

const dec = new TextDecoder();

async function deliver(
  port: number,
  opts: { greet?: string; sender?: string; rcpts?: string[]; body?: string } = {},
): Promise<{ id: string; port: number }> {
  const c = await RawClient.connect(port);
  try {
    assert.equal((await c.reply())?.code, 220);
    assert.equal((await c.cmd(opts.greet ?? "EHLO client.test"))?.code, 250);
    assert.equal((await c.cmd(`MAIL FROM:<${opts.sender ?? "s@sender.test"}>`))?.code, 250);
    for (const r of opts.rcpts ?? ["r@example.test"]) {
      assert.equal((await c.cmd(`RCPT TO:<${r}>`))?.code, 250);
    }
    assert.equal((await c.cmd("DATA"))?.code, 354);
    const r = await c.cmd(
      (opts.body ?? "Message-ID: <abc.123@client.test>\r\nSubject: t\r\n\r\nbody\r\n") + ".",
    );
    assert.equal(r?.code, 250);
    return { id: /id=(\S+)/.exec(r!.text)![1], port: (c.conn.localAddr as Deno.NetAddr).port };
  } finally {
    c.close();
  }
}

/** The first header field of the stored message, unfolded. */
async function receivedOf(f: { spool: { readData(id: string): Promise<Uint8Array> } }, id: string) {
  const data = dec.decode(await f.spool.readData(id));
  const end = data.search(/\r\n(?![ \t])/);
  return { raw: data.slice(0, end + 2), unfolded: data.slice(0, end).replace(/\r\n([ \t])/g, "$1") };
}

Deno.test("Received: has from, by, with, id, for and a date in RFC 5321 4.4 order, folded with CRLF+TAB", async () => {
  await withFerry({}, async (f) => {
    const t0 = Date.now();
    const { id, port } = await deliver(f.port);
    const { raw, unfolded } = await receivedOf(f, id);
    // Every line of the field is at most 78 characters and continuation lines start with a tab.
    for (const line of raw.split("\r\n").filter(Boolean)) assert.ok(line.length <= 78, line);
    assert.ok(raw.split("\r\n").slice(1, -1).every((l) => l.startsWith("\t")));
    const m = new RegExp(
      "^Received: from client\\.test \\(\\[127\\.0\\.0\\.1\\]:" + port +
        "\\)\\s+by ferry\\.test \\(Ferry\\)" +
        "\\s+with ESMTP\\s+id " + id +
        "\\s+\\(envelope-from <s@sender\\.test>\\)\\s+for <r@example\\.test>;" +
        " ((?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \\d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) " +
        "\\d{4} \\d\\d:\\d\\d:\\d\\d [+-]\\d{4})$",
    ).exec(unfolded);
    assert.ok(m, unfolded);
    const when = Date.parse(m[1]);
    assert.ok(Math.abs(when - t0) < 60_000, `${m[1]} is not now`);
    // Exactly one trace field was added.
    const data = dec.decode(await f.spool.readData(id));
    assert.equal(data.match(/^Received:/gm)?.length, 1);
  });
});

Deno.test("Received: names no recipient when there are several; HELO gives 'with SMTP'", async () => {
  await withFerry({}, async (f) => {
    const { id } = await deliver(f.port, {
      greet: "HELO old.test",
      rcpts: ["a@example.test", "b@example.test"],
    });
    const { unfolded } = await receivedOf(f, id);
    assert.match(unfolded, /^Received: from old\.test \(/);
    assert.match(unfolded, /\swith SMTP\sid /);
    assert.ok(!/\sfor </.test(unfolded), unfolded);
    assert.match(unfolded, /\(envelope-from <s@sender\.test>\); \w{3}, /);
    const env = await f.spool.get(id);
    assert.equal(env?.protocol, "smtp");
    assert.ok(
      f.memlog.has(` P=smtp S=${env?.size} id=abc.123@client.test for a@example.test b@example.test`),
    );
  });
});

Deno.test("Received: a hostile HELO cannot add comments, fields or lines to the trace field", async () => {
  await withFerry({}, async (f) => {
    const { id } = await deliver(f.port, { greet: "EHLO evil(by\\x)" });
    const { raw, unfolded } = await receivedOf(f, id);
    assert.match(unfolded, /^Received: from evil\?by\?x\? \(\[127\.0\.0\.1\]:\d+\)\sby ferry\.test /);
    assert.equal(raw.match(/\r\n/g)?.length, 5);
  });
});

Deno.test("the <= log line has sender, H=(helo) [ip]:port, P=esmtp, S=size, id=Message-ID and the recipients", async () => {
  await withFerry({}, async (f) => {
    const { id, port } = await deliver(f.port, { rcpts: ["r@example.test", "q@example.test"] });
    const env = await f.spool.get(id);
    const data = await f.spool.readData(id);
    assert.equal(env?.size, data.length);
    const line = f.memlog.lines.find((l) => l.text.startsWith("<= "));
    assert.ok(line);
    assert.equal(
      line.text,
      `<= s@sender.test H=(client.test) [127.0.0.1]:${port} P=esmtp S=${data.length} id=abc.123@client.test` +
        ` for r@example.test q@example.test`,
    );
    assert.equal(line.fields.id, id);
    assert.equal(line.fields.event, "<=");
  });
});

Deno.test("the <= log line shows <> for the null sender and has no id= when the message has no Message-ID", async () => {
  await withFerry({}, async (f) => {
    await deliver(f.port, { sender: "", body: "Subject: bounce\r\n\r\nbody\r\n" });
    const line = f.memlog.lines.find((l) => l.text.startsWith("<= "));
    assert.ok(line);
    assert.match(
      line.text,
      /^<= <> H=\(client\.test\) \[127\.0\.0\.1\]:\d+ P=esmtp S=\d+ for r@example\.test$/,
    );
  });
});
