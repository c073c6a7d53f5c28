/** The SMTP client against a real peer: Postfix's smtp-sink (Debian package "postfix"). */

import assert from "node:assert/strict";
import { SmtpClient, SmtpClientError, SmtpTimeoutError } from "../../src/smtp/client.ts";
import { freePort } from "../helpers/process.ts";

const SINK = "/usr/sbin/smtp-sink";
const enc = (s: string) => new TextEncoder().encode(s);
const FAST = {
  timeouts: {
    greeting: 3000,
    command: 3000,
    mail: 3000,
    rcpt: 3000,
    dataInit: 3000,
    dataBlock: 3000,
    dataFinal: 3000,
  },
};
const MSG = enc(
  "From: a@example.org\r\nTo: b@example.net\r\nSubject: sink test\r\n\r\n" +
    ".first line starts with a dot\r\n..two dots\r\nmiddle\r\n.\r\nlast line without CRLF",
);

interface Sink {
  port: number;
  dir: string;
  dumps(): Promise<string[]>;
  stop(): Promise<void>;
}

async function startSink(flags: string[]): Promise<Sink> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-sink-" });
  await Deno.chmod(dir, 0o777);
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = freePort();
    const child = new Deno.Command(SINK, {
      args: ["-u", "nobody", "-d", `${dir}/m.`, ...flags, `127.0.0.1:${port}`, "10"],
      stdout: "null",
      stderr: "null",
    }).spawn();
    const stop = async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      await child.status;
      await Deno.remove(dir, { recursive: true });
    };
    for (let i = 0; i < 60; i++) {
      try {
        const probe = await Deno.connect({ hostname: "127.0.0.1", port });
        probe.close();
        const dumps = async () => {
          const out: string[] = [];
          for await (const e of Deno.readDir(dir)) out.push(await Deno.readTextFile(`${dir}/${e.name}`));
          return out;
        };
        return { port, dir, dumps, stop };
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    try {
      child.kill("SIGTERM");
    } catch { /* exited: port taken */ }
    await child.status;
  }
  await Deno.remove(dir, { recursive: true });
  throw new Error("smtp-sink did not start");
}

async function withSink(flags: string[], fn: (sink: Sink, client: SmtpClient) => Promise<void>, opts = FAST) {
  const sink = await startSink(flags);
  let client: SmtpClient | undefined;
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: sink.port });
    client = new SmtpClient(conn, opts);
    await fn(sink, client);
  } finally {
    client?.close();
    await sink.stop();
  }
}

Deno.test("SmtpClient delivers through smtp-sink with PIPELINING and DSN, and the body arrives unstuffed", async () => {
  await withSink([], async (sink, c) => {
    const greeting = await c.greeting();
    assert.equal(greeting.code, 220);
    const caps = await c.ehlo("client.ferry.test");
    assert.ok(caps.pipelining && caps.dsn && caps.eightBitMime && caps.enhancedStatusCodes);
    const result = await c.send({
      from: "a@example.org",
      recipients: [
        {
          address: "b@example.net",
          notify: ["SUCCESS", "FAILURE"],
          orcpt: { type: "rfc822", address: "B+x@example.net" },
        },
        { address: "c@example.net" },
      ],
      ret: "HDRS",
      envid: "env 42",
      body: "8BITMIME",
      size: MSG.length,
    }, MSG);
    assert.equal(result.mail.code, 250);
    assert.equal(result.mail.enhanced, "2.1.0");
    assert.deepEqual(result.delivered, ["b@example.net", "c@example.net"]);
    assert.equal(result.data?.code, 250);
    assert.equal(result.dsnPassed, true);
    assert.equal((await c.quit())?.code, 221);

    const [dump] = await sink.dumps();
    assert.match(dump, /^X-Mail-Args: <a@example.org> BODY=8BITMIME RET=HDRS ENVID=env\+2042$/m);
    assert.match(
      dump,
      /^X-Rcpt-Args: <b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B\+2Bx@example.net$/m,
    );
    assert.match(dump, /^X-Rcpt-Args: <c@example.net>$/m);
    const body = dump.slice(dump.indexOf("Subject: sink test"));
    assert.equal(
      body.trimEnd(),
      "Subject: sink test\n\n.first line starts with a dot\n..two dots\nmiddle\n.\nlast line without CRLF",
    );
  });
});

Deno.test("SmtpClient runs two transactions on one smtp-sink connection without PIPELINING or DSN", async () => {
  await withSink(["-p", "-N"], async (sink, c) => {
    await c.greeting();
    const caps = await c.ehlo("client.ferry.test");
    assert.equal(caps.pipelining, false);
    assert.equal(caps.dsn, false);
    for (const to of ["one@example.net", "two@example.net"]) {
      const r = await c.send({
        from: "",
        recipients: [{ address: to, notify: ["NEVER"] }],
        ret: "FULL",
        size: 10,
      }, MSG);
      assert.deepEqual(r.delivered, [to]);
      assert.equal(r.dsnPassed, false);
    }
    await c.quit();
    const dumps = await sink.dumps();
    assert.equal(dumps.length, 2);
    for (const d of dumps) {
      assert.match(d, /^X-Mail-Args: <>$/m);
      assert.doesNotMatch(d, /NOTIFY|RET=/);
    }
  });
});

Deno.test("SmtpClient falls back to HELO with smtp-sink -e and refuses 8BITMIME there", async () => {
  await withSink(["-e"], async (sink, c) => {
    await c.greeting();
    const caps = await c.ehlo("client.ferry.test");
    assert.equal(caps.esmtp, false);
    await assert.rejects(
      c.send({ from: "a@x.test", recipients: [{ address: "b@x.test" }], body: "8BITMIME", size: 10 }, MSG),
      (e) => e instanceof SmtpClientError && e.enhanced === "5.6.3" && e.kind === "local",
    );
    const r = await c.send({ from: "a@x.test", recipients: [{ address: "b@x.test" }], size: 10 }, MSG);
    assert.deepEqual(r.delivered, ["b@x.test"]);
    await c.quit();
    const [dump] = await sink.dumps();
    assert.match(dump, /^X-Client-Proto: SMTP$/m);
    assert.match(dump, /^X-Mail-Args: <a@x.test>$/m);
  });
});

Deno.test("SmtpClient gets per-recipient refusals from smtp-sink -f RCPT, resets and sends no data", async () => {
  await withSink(["-f", "RCPT"], async (sink, c) => {
    await c.greeting();
    await c.ehlo("client.ferry.test");
    const r = await c.send({
      from: "a@x.test",
      recipients: [{ address: "b@x.test" }, { address: "c@x.test" }],
      size: 10,
    }, MSG);
    assert.equal(r.method, "none");
    assert.deepEqual(r.accepted, []);
    assert.deepEqual(r.recipients.map((x) => [x.stage, x.reply.code, x.reply.enhanced]), [
      ["rcpt", 500, "5.3.0"],
      ["rcpt", 500, "5.3.0"],
    ]);
    assert.equal(c.closed, false);
    assert.equal((await c.rset()).code, 250);
    await c.quit();
    assert.deepEqual(await sink.dumps(), []);
  });
});

Deno.test("SmtpClient reports smtp-sink's soft refusal of DATA as temporary for every accepted recipient", async () => {
  await withSink(["-r", "DATA"], async (_sink, c) => {
    await c.greeting();
    await c.ehlo("client.ferry.test");
    const r = await c.send({ from: "a@x.test", recipients: [{ address: "b@x.test" }], size: 10 }, MSG);
    assert.equal(r.dataCommand?.code, 450);
    assert.deepEqual(r.delivered, []);
    assert.equal(r.recipients[0].stage, "data");
    assert.equal(r.recipients[0].reply.enhanced, "4.3.0");
    await c.quit();
  });
});

Deno.test("SmtpClient sees smtp-sink -Q MAIL's 421 and stops using the connection", async () => {
  await withSink(["-Q", "MAIL"], async (_sink, c) => {
    await c.greeting();
    await c.ehlo("client.ferry.test");
    const r = await c.send({ from: "a@x.test", recipients: [{ address: "b@x.test" }], size: 10 }, MSG);
    assert.equal(r.mail.code, 421);
    assert.equal(r.recipients[0].stage, "mail");
    assert.equal(c.closed, true);
  });
});

// Without -p, smtp-sink -W answers the pipelined RCPT and DATA before the delayed MAIL (out of order).
Deno.test("SmtpClient times out when smtp-sink -W delays the MAIL reply", async () => {
  await withSink(["-p", "-W", "MAIL:3"], async (_sink, c) => {
    await c.greeting();
    await c.ehlo("client.ferry.test");
    const t0 = Date.now();
    await assert.rejects(
      c.send({ from: "a@x.test", recipients: [{ address: "b@x.test" }], size: 10 }, MSG),
      (e) => e instanceof SmtpTimeoutError && e.stage === "mail",
    );
    assert.ok(Date.now() - t0 < 2000);
    assert.equal(c.closed, true);
  }, { timeouts: { ...FAST.timeouts, mail: 300 } });
});
