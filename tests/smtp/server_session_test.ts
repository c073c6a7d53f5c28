import assert from "node:assert/strict";
import { reply, SmtpError } from "../../src/core/reply.ts";
import { type ByteStream, writeAll } from "../../src/core/stream.ts";
import { ServerSession } from "../../src/smtp/server_session.ts";
import type {
  ContentInfo,
  MessageOutcome,
  RcptEntry,
  ServerSessionOptions,
  SessionExtensions,
  SessionHandler,
  SessionLimits,
  Transaction,
} from "../../src/smtp/session_types.ts";
import { duplexPair, type MemoryStream } from "../helpers/duplex.ts";

const enc = (s: string) => new TextEncoder().encode(s);

/** A reply as the client read it. */
interface Got {
  code: number;
  enhanced?: string;
  /** Text of each line without code and enhanced code */
  lines: string[];
  raw: string;
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Timed out waiting for ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** An SMTP client end that reads replies on demand. */
class Client {
  stream: ByteStream;
  #buf = "";
  #eof = false;
  #decoder = new TextDecoder();

  constructor(stream: ByteStream) {
    this.stream = stream;
  }

  async send(text: string | Uint8Array): Promise<void> {
    await writeAll(this.stream, typeof text === "string" ? enc(text) : text);
  }

  async #fill(): Promise<void> {
    const p = new Uint8Array(64 * 1024);
    const n = await withTimeout(
      this.stream.read(p),
      15_000,
      `server output (have ${JSON.stringify(this.#buf)})`,
    );
    if (n === null) this.#eof = true;
    else this.#buf += this.#decoder.decode(p.subarray(0, n), { stream: true });
  }

  #take(): Got | undefined {
    let pos = 0;
    const lines: string[] = [];
    for (;;) {
      const nl = this.#buf.indexOf("\r\n", pos);
      if (nl < 0) return undefined;
      const line = this.#buf.slice(pos, nl);
      pos = nl + 2;
      lines.push(line);
      if (!/^\d{3}[ -]/.test(line)) throw new Error(`Bad reply line ${JSON.stringify(line)}`);
      if (line[3] === " ") break;
    }
    const raw = this.#buf.slice(0, pos);
    this.#buf = this.#buf.slice(pos);
    const last = lines[lines.length - 1];
    const enhanced = /^\d{3} ([245]\.\d{1,3}\.\d{1,3}) /.exec(last)?.[1];
    return {
      code: Number(last.slice(0, 3)),
      enhanced,
      lines: lines.map((l) => l.slice(4).replace(enhanced ? `${enhanced} ` : "", "")),
      raw,
    };
  }

  /** The next reply. */
  async reply(): Promise<Got> {
    for (;;) {
      const got = this.#take();
      if (got) return got;
      if (this.#eof) throw new Error(`Connection closed; unread: ${JSON.stringify(this.#buf)}`);
      await this.#fill();
    }
  }

  /** Reads the next reply and checks its code (and enhanced code when given). */
  async expect(code: number, enhanced?: string): Promise<Got> {
    const got = await this.reply();
    assert.equal(got.code, code, `expected ${code}, got ${JSON.stringify(got.raw)}`);
    if (enhanced !== undefined) {
      assert.equal(got.enhanced, enhanced, `enhanced code in ${JSON.stringify(got.raw)}`);
    }
    return got;
  }

  /** Sends a command and checks its reply. */
  async cmd(line: string, code: number, enhanced?: string): Promise<Got> {
    await this.send(line + "\r\n");
    return await this.expect(code, enhanced);
  }

  /** Waits for the server to close; returns whatever it sent that was not read yet. */
  async closed(): Promise<string> {
    while (!this.#eof) await this.#fill();
    const rest = this.#buf;
    this.#buf = "";
    return rest;
  }
}

/** What the fake handler saw. */
interface Seen {
  calls: string[];
  messages: { tx: Transaction; content: string; info: ContentInfo }[];
  rcpts: RcptEntry[];
  errors: string[];
  closed?: string;
}

function fakeHandler(seen: Seen, over: Partial<SessionHandler> = {}): SessionHandler {
  return {
    helo(name, esmtp) {
      seen.calls.push(`helo ${name} ${esmtp}`);
    },
    mail(tx) {
      seen.calls.push(`mail <${tx.sender}>`);
    },
    rcpt(_tx, r) {
      seen.calls.push(`rcpt <${r.address}>`);
      seen.rcpts.push(r);
    },
    data() {
      seen.calls.push("data");
    },
    message(tx, content, info): Promise<MessageOutcome> {
      seen.messages.push({ tx: structuredClone(tx), content: new TextDecoder().decode(content), info });
      seen.calls.push("message");
      return Promise.resolve({ reply: reply(250, "2.0.0", "OK queued") });
    },
    reset() {
      seen.calls.push("reset");
    },
    protocolError(_r, detail) {
      seen.errors.push(detail);
    },
    closed(reason) {
      seen.closed = reason;
    },
    ...over,
  };
}

const LIMITS: SessionLimits = {
  commandLine: 512,
  textLine: 1000,
  messageSize: 10_000,
  recipients: 3,
  badCommands: 100,
  commandTimeoutMs: 3000,
  dataTimeoutMs: 3000,
  greetingDelayMs: 0,
};

const ALL: SessionExtensions = {
  pipelining: true,
  chunking: true,
  dsn: true,
  prdr: true,
  smtputf8: true,
  startTls: true,
};

interface StartOptions {
  limits?: Partial<SessionLimits>;
  extensions?: Partial<SessionExtensions>;
  handler?: Partial<SessionHandler>;
  session?: Partial<ServerSessionOptions>;
  /** Do not read the greeting */
  noGreeting?: boolean;
}

async function start(o: StartOptions = {}) {
  const [server, clientEnd] = duplexPair();
  const seen: Seen = { calls: [], messages: [], rcpts: [], errors: [] };
  const session = new ServerSession(server, fakeHandler(seen, o.handler), {
    hostname: "mx.test",
    banner: "ESMTP Ferry",
    limits: { ...LIMITS, ...o.limits },
    extensions: { ...ALL, ...o.extensions },
    bareLineEndings: "reject",
    clientIp: "192.0.2.1",
    ...o.session,
  });
  const done = session.run();
  const c = new Client(clientEnd);
  if (!o.noGreeting) await c.expect(220);
  return { c, seen, session, done, server, clientEnd };
}

/** Ends a test: the client hangs up (if still open) and the session finishes. */
async function finish(t: { done: Promise<void>; clientEnd: MemoryStream }): Promise<void> {
  t.clientEnd.close();
  await withTimeout(t.done, 5000, "session end");
}

/** EHLO, MAIL, RCPT ready for data. */
async function openTx(c: Client, rcpts = ["rcpt@example.test"]): Promise<void> {
  await c.cmd("EHLO client.test", 250);
  await c.cmd("MAIL FROM:<sender@example.test>", 250, "2.1.0");
  for (const r of rcpts) await c.cmd(`RCPT TO:<${r}>`, 250, "2.1.5");
}

Deno.test("ServerSession greets with 220, hostname and banner, no enhanced code", async () => {
  const t = await start({ noGreeting: true });
  const g = await t.c.reply();
  assert.equal(g.raw, "220 mx.test ESMTP Ferry\r\n");
  await t.c.cmd("QUIT", 221, "2.0.0");
  assert.equal(await t.c.closed(), "");
  await finish(t);
  assert.equal(t.seen.closed, "QUIT");
});

Deno.test("ServerSession EHLO lists every offered extension", async () => {
  const t = await start();
  const r = await t.c.cmd("EHLO client.test", 250);
  assert.equal(r.enhanced, undefined);
  assert.equal(r.lines[0], "mx.test Hello client.test [192.0.2.1]");
  assert.deepEqual(r.lines.slice(1), [
    "SIZE 10000",
    "8BITMIME",
    "PIPELINING",
    "CHUNKING",
    "DSN",
    "SMTPUTF8",
    "PRDR",
    "STARTTLS",
    "ENHANCEDSTATUSCODES",
    "HELP",
  ]);
  assert.deepEqual(t.seen.calls, ["helo client.test true"]);
  await finish(t);
});

Deno.test("ServerSession EHLO leaves out extensions not offered", async () => {
  const t = await start({
    extensions: {
      pipelining: false,
      chunking: false,
      dsn: false,
      prdr: false,
      smtputf8: false,
      startTls: false,
    },
  });
  const r = await t.c.cmd("EHLO client.test", 250);
  assert.deepEqual(r.lines.slice(1), ["SIZE 10000", "8BITMIME", "ENHANCEDSTATUSCODES", "HELP"]);
  // What is not offered is not accepted either.
  await t.c.cmd("MAIL FROM:<a@example.test> SMTPUTF8", 555, "5.5.4");
  await t.c.cmd("MAIL FROM:<a@example.test> RET=FULL", 555, "5.5.4");
  await t.c.cmd("MAIL FROM:<a@example.test> PRDR", 555, "5.5.4");
  await t.c.cmd("BDAT 0 LAST", 500, "5.5.1");
  await t.c.cmd("STARTTLS", 502, "5.5.1");
  await t.c.cmd("MAIL FROM:<a@example.test>", 250, "2.1.0");
  await t.c.cmd("RCPT TO:<b@example.test> NOTIFY=NEVER", 555, "5.5.4");
  await finish(t);
});

Deno.test("ServerSession HELO answers one line and refuses ESMTP parameters", async () => {
  const t = await start();
  const r = await t.c.cmd("HELO client.test", 250);
  assert.equal(r.raw, "250 mx.test Hello client.test [192.0.2.1]\r\n");
  assert.deepEqual(t.seen.calls, ["helo client.test false"]);
  await t.c.cmd("MAIL FROM:<a@example.test> SIZE=10", 555, "5.5.4");
  await t.c.cmd("MAIL FROM:<a@example.test>", 250, "2.1.0");
  await t.c.cmd("RCPT TO:<b@example.test>", 250, "2.1.5");
  await t.c.cmd("DATA", 354);
  await t.c.send("Subject: hi\r\n\r\nbody\r\n.\r\n");
  await t.c.expect(250, "2.0.0");
  assert.equal(t.seen.messages[0].content, "Subject: hi\r\n\r\nbody\r\n");
  await finish(t);
});

Deno.test("ServerSession answers each command with its code and enhanced code", async () => {
  const t = await start();
  const c = t.c;
  await c.cmd("MAIL FROM:<a@example.test>", 503, "5.5.1");
  await c.cmd("RCPT TO:<a@example.test>", 503, "5.5.1");
  await c.cmd("DATA", 503, "5.5.1");
  await c.cmd("EHLO", 501, "5.5.4");
  await c.cmd("HELO two words", 501, "5.5.4");
  await c.cmd("EHLO client.test", 250);
  await c.cmd("NOOP", 250, "2.0.0");
  await c.cmd("NOOP anything", 250, "2.0.0");
  await c.cmd("VRFY postmaster", 252, "2.5.0");
  await c.cmd("VRFY", 501, "5.5.4");
  await c.cmd("EXPN staff", 502, "5.5.1");
  await c.cmd("EXPN", 501, "5.5.4");
  const help = await c.cmd("HELP", 214, "2.0.0");
  assert.ok(help.lines.length >= 2);
  assert.match(help.lines.join(" "), /MAIL RCPT DATA/);
  await c.cmd("FROB", 500, "5.5.1");
  await c.cmd("", 500, "5.5.2");
  await c.cmd("RSET now", 501, "5.5.4");
  await c.cmd("MAIL FROM:a@example.test", 501, "5.5.4");
  await c.cmd("MAIL TO:<a@example.test>", 501, "5.5.4");
  await c.cmd("MAIL FROM:<a@@example.test>", 501);
  await c.cmd("MAIL FROM:<a@example.test> SIZE=big", 501, "5.5.4");
  await c.cmd("MAIL FROM:<a@example.test> BODY=BINARYMIME", 501, "5.5.4");
  await c.cmd("MAIL FROM:<a@example.test> FOO=1", 555, "5.5.4");
  await c.cmd("MAIL FROM:<a@example.test> BODY=8BITMIME SIZE=100", 250, "2.1.0");
  await c.cmd("MAIL FROM:<b@example.test>", 503, "5.5.1");
  await c.cmd("RCPT TO:<x@[300.1.1.1]>", 501, "5.1.7");
  await c.cmd("RCPT TO:x@example.test", 501, "5.5.4");
  await c.cmd("RCPT TO:<x@example.test> FOO=1", 555, "5.5.4");
  await c.cmd("DATA now", 501, "5.5.4");
  await c.cmd("BDAT x", 501, "5.5.4");
  await c.cmd("QUIT", 221, "2.0.0");
  await c.closed();
  await finish(t);
  assert.ok(t.seen.errors.some((e) => e.includes("unknown command")));
});

Deno.test("ServerSession RSET ends the transaction but keeps the EHLO", async () => {
  const t = await start();
  await openTx(t.c);
  await t.c.cmd("RSET", 250, "2.0.0");
  assert.equal(t.session.inTransaction, false);
  await t.c.cmd("RCPT TO:<x@example.test>", 503, "5.5.1");
  await t.c.cmd("MAIL FROM:<again@example.test>", 250, "2.1.0");
  assert.equal(t.session.inTransaction, true);
  assert.ok(t.seen.calls.includes("reset"));
  assert.equal(t.session.helo, "client.test");
  await finish(t);
});

Deno.test("ServerSession QUIT answers 221 and closes, ignoring buffered input", async () => {
  const t = await start();
  await t.c.send("QUIT\r\nNOOP\r\n");
  await t.c.expect(221, "2.0.0");
  assert.equal(await t.c.closed(), "");
  await finish(t);
});

Deno.test("ServerSession refuses MAIL with SIZE over the limit (552 5.3.4), accepts at the limit", async () => {
  const t = await start();
  await t.c.cmd("EHLO client.test", 250);
  await t.c.cmd("MAIL FROM:<a@example.test> SIZE=10001", 552, "5.3.4");
  assert.equal(t.session.inTransaction, false);
  const m = await t.c.cmd("MAIL FROM:<a@example.test> SIZE=10000", 250, "2.1.0");
  assert.equal(m.code, 250);
  await finish(t);
});

Deno.test("ServerSession limits recipients per message (452 4.5.3) and delivers to the accepted ones", async () => {
  const t = await start();
  await openTx(t.c, ["a@example.test", "b@example.test", "c@example.test"]);
  await t.c.cmd("RCPT TO:<d@example.test>", 452, "4.5.3");
  await t.c.cmd("DATA", 354);
  await t.c.send("x\r\n.\r\n");
  await t.c.expect(250);
  assert.deepEqual(t.seen.messages[0].tx.recipients.map((r) => r.address), [
    "a@example.test",
    "b@example.test",
    "c@example.test",
  ]);
  await finish(t);
});

Deno.test("ServerSession closes with 421 after too many bad commands", async () => {
  const t = await start({ limits: { badCommands: 3 } });
  await t.c.cmd("FOO", 500, "5.5.1");
  await t.c.cmd("MAIL FROM:<a@example.test>", 503, "5.5.1");
  await t.c.cmd("BAR", 500, "5.5.1");
  await t.c.expect(421, "4.7.0");
  assert.equal(await t.c.closed(), "");
  await finish(t);
  assert.equal(t.seen.closed, "too many errors");
});

Deno.test("ServerSession refuses a command line over 512 octets (500 5.5.2) and carries on", async () => {
  const t = await start();
  // Exactly 512 octets with CRLF is fine.
  await t.c.cmd("NOOP " + "x".repeat(512 - 7), 250, "2.0.0");
  await t.c.cmd("NOOP " + "x".repeat(512 - 6), 500, "5.5.2");
  // A long line arriving in pieces, without its end yet, is refused once and skipped.
  await t.c.send("MAIL FROM:<" + "a".repeat(600));
  await t.c.expect(500, "5.5.2");
  await t.c.send("a".repeat(600) + "@example.test>\r\n");
  await t.c.cmd("NOOP", 250, "2.0.0");
  await finish(t);
});

Deno.test("ServerSession closes an idle connection with 421 4.4.2 after the command timeout", async () => {
  const t = await start({ limits: { commandTimeoutMs: 100 } });
  await t.c.cmd("EHLO client.test", 250);
  const r = await t.c.expect(421, "4.4.2");
  assert.match(r.lines[0], /Timeout/);
  await t.c.closed();
  await finish(t);
  assert.equal(t.seen.closed, "timeout waiting for command");
});

Deno.test("ServerSession closes with 421 4.4.2 when message data stops coming", async () => {
  const t = await start({ limits: { dataTimeoutMs: 100 } });
  await openTx(t.c);
  await t.c.cmd("DATA", 354);
  await t.c.send("Subject: half\r\n");
  await t.c.expect(421, "4.4.2");
  await t.c.closed();
  await finish(t);
  assert.equal(t.seen.messages.length, 0);
  assert.equal(t.seen.closed, "timeout waiting for data");
});

Deno.test("ServerSession refuses input sent before the delayed greeting (554, close)", async () => {
  const t = await start({ limits: { greetingDelayMs: 300 }, noGreeting: true });
  await t.c.send("EHLO eager.test\r\n");
  const r = await t.c.expect(554, "5.5.0");
  assert.match(r.lines[0], /synchronization/i);
  assert.equal(await t.c.closed(), "");
  await finish(t);
  assert.deepEqual(t.seen.calls, []);
});

Deno.test("ServerSession with a greeting delay serves a client that waits for the banner", async () => {
  const t = await start({ limits: { greetingDelayMs: 50 } });
  await t.c.cmd("EHLO patient.test", 250);
  await t.c.cmd("NOOP", 250, "2.0.0");
  await finish(t);
});

Deno.test("ServerSession ends the session on pipelined input after HELO (554, close)", async () => {
  const t = await start();
  await t.c.cmd("HELO client.test", 250);
  await t.c.send("MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n");
  await t.c.expect(554, "5.5.0");
  assert.equal(await t.c.closed(), "");
  await finish(t);
  assert.ok(!t.seen.calls.some((c) => c.startsWith("mail")));
});

Deno.test("ServerSession ends the session on pipelined input when PIPELINING is not offered", async () => {
  const t = await start({ extensions: { pipelining: false } });
  await t.c.cmd("EHLO client.test", 250);
  await t.c.send("MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n");
  await t.c.expect(554, "5.5.0");
  await t.c.closed();
  await finish(t);
});

Deno.test("ServerSession refuses commands pipelined behind EHLO even with PIPELINING", async () => {
  const t = await start();
  await t.c.send("EHLO client.test\r\nMAIL FROM:<a@example.test>\r\n");
  await t.c.expect(554, "5.5.0");
  await t.c.closed();
  await finish(t);
});

Deno.test("ServerSession with PIPELINING answers MAIL, RCPT, RCPT, DATA in order, then 354", async () => {
  const t = await start();
  await t.c.cmd("EHLO client.test", 250);
  await t.c.send(
    "MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\nDATA\r\n",
  );
  await t.c.expect(250, "2.1.0");
  await t.c.expect(250, "2.1.5");
  await t.c.expect(250, "2.1.5");
  await t.c.expect(354);
  await t.c.send("Subject: p\r\n\r\n..dot\r\n.\r\n");
  await t.c.expect(250, "2.0.0");
  assert.equal(t.seen.messages[0].content, "Subject: p\r\n\r\n.dot\r\n");
  assert.equal(t.seen.messages[0].tx.via, "DATA");
  assert.equal(t.seen.messages[0].info.size, t.seen.messages[0].content.length);
  assert.deepEqual(t.seen.calls, [
    "helo client.test true",
    "mail <a@example.test>",
    "rcpt <b@example.test>",
    "rcpt <c@example.test>",
    "data",
    "message",
    "reset",
  ]);
  await finish(t);
});

Deno.test("ServerSession ends the session when message data comes before the 354", async () => {
  const t = await start();
  await openTx(t.c);
  await t.c.send("DATA\r\nSubject: eager\r\n\r\nx\r\n.\r\n");
  await t.c.expect(554, "5.5.0");
  await t.c.closed();
  await finish(t);
  assert.equal(t.seen.messages.length, 0);
});

Deno.test("ServerSession answers DATA without recipients 554 5.5.1 and ends the transaction", async () => {
  const t = await start({
    handler: {
      rcpt() {
        throw new SmtpError(550, "5.1.1", "No such user");
      },
    },
  });
  await t.c.cmd("EHLO client.test", 250);
  await t.c.cmd("MAIL FROM:<a@example.test>", 250);
  await t.c.cmd("RCPT TO:<nobody@example.test>", 550, "5.1.1");
  await t.c.cmd("DATA", 554, "5.5.1");
  await t.c.cmd("RCPT TO:<b@example.test>", 503, "5.5.1");
  await t.c.cmd("MAIL FROM:<a@example.test>", 250);
  await finish(t);
});

Deno.test("ServerSession BDAT chunks then LAST give the handler the exact content", async () => {
  const t = await start();
  await openTx(t.c);
  const chunks = ["Subject: b\r\n\r\n.leading dot\r", "\n.\r\n", "end\r\n"];
  await t.c.send(`BDAT ${enc(chunks[0]).length}\r\n${chunks[0]}`);
  await t.c.expect(250, "2.0.0");
  await t.c.send(`BDAT ${enc(chunks[1]).length}\r\n${chunks[1]}`);
  await t.c.expect(250, "2.0.0");
  await t.c.send(`BDAT ${enc(chunks[2]).length} LAST\r\n${chunks[2]}`);
  await t.c.expect(250, "2.0.0");
  assert.equal(t.seen.messages.length, 1);
  assert.equal(t.seen.messages[0].content, chunks.join(""));
  assert.equal(t.seen.messages[0].tx.via, "BDAT");
  assert.equal(t.seen.calls.filter((c) => c === "data").length, 1);
  // The next transaction starts clean.
  await t.c.cmd("MAIL FROM:<x@example.test>", 250);
  await t.c.cmd("RCPT TO:<y@example.test>", 250);
  await t.c.send("BDAT 0 LAST\r\n");
  await t.c.expect(250);
  assert.equal(t.seen.messages[1].content, "");
  await finish(t);
});

Deno.test("ServerSession BDAT without MAIL still consumes the chunk, answers 503 and carries on", async () => {
  const t = await start();
  await t.c.cmd("EHLO client.test", 250);
  const chunk = "QUIT\r\nRSET\r\n";
  await t.c.send(`BDAT ${chunk.length}\r\n${chunk}`);
  await t.c.expect(503, "5.5.1");
  await t.c.cmd("NOOP", 250, "2.0.0");
  await t.c.cmd("MAIL FROM:<a@example.test>", 250);
  // No recipients: refused, chunk consumed, transaction over.
  await t.c.send(`BDAT ${chunk.length} LAST\r\n${chunk}`);
  await t.c.expect(554, "5.5.1");
  await t.c.cmd("NOOP", 250);
  await t.c.cmd("RCPT TO:<a@example.test>", 503, "5.5.1");
  await finish(t);
  assert.equal(t.seen.messages.length, 0);
});

Deno.test("ServerSession refuses DATA after BDAT and BDAT after DATA in one transaction", async () => {
  const t = await start();
  await openTx(t.c);
  await t.c.send("BDAT 3\r\nabc");
  await t.c.expect(250);
  await t.c.cmd("DATA", 503, "5.5.1");
  await t.c.cmd("RCPT TO:<late@example.test>", 503, "5.5.1");
  await t.c.send("BDAT 3 LAST\r\ndef");
  await t.c.expect(250);
  assert.equal(t.seen.messages[0].content, "abcdef");
  await finish(t);
});

Deno.test("ServerSession accepts BDAT with its chunk in one write when CHUNKING is offered without PIPELINING", async () => {
  const t = await start({ extensions: { pipelining: false } });
  await openTx(t.c);
  await t.c.send("BDAT 5 LAST\r\nhello");
  await t.c.expect(250, "2.0.0");
  assert.equal(t.seen.messages[0]?.content, "hello");
  await t.c.cmd("NOOP", 250);
  // Commands pipelined behind the chunk are still a synchronisation error.
  await t.c.cmd("MAIL FROM:<a@example.test>", 250);
  await t.c.cmd("RCPT TO:<b@example.test>", 250);
  await t.c.send("BDAT 2 LAST\r\nhiNOOP\r\n");
  await t.c.expect(554, "5.5.0");
  await t.c.closed();
  await finish(t);
});

Deno.test("ServerSession passes DSN parameters to the handler", async () => {
  const t = await start();
  await t.c.cmd("EHLO client.test", 250);
  await t.c.cmd("MAIL FROM:<a@example.test> RET=HDRS ENVID=QQ+2B314", 250, "2.1.0");
  await t.c.cmd("RCPT TO:<b@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@x.test", 250, "2.1.5");
  await t.c.cmd("RCPT TO:<c@example.test> NOTIFY=NEVER", 250, "2.1.5");
  await t.c.cmd("RCPT TO:<d@example.test> NOTIFY=NEVER,DELAY", 501, "5.5.4");
  await t.c.cmd("RCPT TO:<d@example.test> NOTIFY=SOMETIMES", 501, "5.5.4");
  await t.c.cmd("RCPT TO:<d@example.test> ORCPT=rfc822;a+2gb", 501, "5.5.4");
  await t.c.cmd("DATA", 354);
  await t.c.send("x\r\n.\r\n");
  await t.c.expect(250);
  const tx = t.seen.messages[0].tx;
  assert.equal(tx.params.ret, "HDRS");
  assert.equal(tx.params.envid, "QQ+314");
  assert.deepEqual(tx.recipients[0].notify, ["SUCCESS", "FAILURE"]);
  assert.deepEqual(tx.recipients[0].orcpt, { type: "rfc822", address: "a+b@x.test" });
  assert.deepEqual(tx.recipients[1].notify, ["NEVER"]);
  assert.equal(tx.recipients.length, 2);
  await t.c.cmd("MAIL FROM:<a@example.test> RET=SOME", 501, "5.5.4");
  await t.c.cmd("MAIL FROM:<a@example.test> ENVID=" + "x".repeat(101), 501, "5.5.4");
  await finish(t);
});

Deno.test("ServerSession PRDR: 353 then one reply per recipient then the final reply", async () => {
  const t = await start({
    handler: {
      message(tx) {
        assert.equal(tx.params.prdr, true);
        return Promise.resolve({
          prdr: [reply(250, "2.1.5", "ok for b"), reply(550, "5.7.1", "refused for c")],
          final: reply(250, "2.0.0", "accepted for some"),
        });
      },
    },
  });
  await t.c.cmd("EHLO client.test", 250);
  await t.c.cmd("MAIL FROM:<a@example.test> PRDR", 250, "2.1.0");
  await t.c.cmd("RCPT TO:<b@example.test>", 250);
  await t.c.cmd("RCPT TO:<c@example.test>", 250);
  await t.c.cmd("DATA", 354);
  await t.c.send("x\r\n.\r\n");
  await t.c.expect(353);
  assert.equal((await t.c.expect(250, "2.1.5")).lines[0], "ok for b");
  await t.c.expect(550, "5.7.1");
  assert.equal((await t.c.expect(250, "2.0.0")).lines[0], "accepted for some");
  await t.c.cmd("MAIL FROM:<a@example.test> PRDR=yes", 555, "5.5.4");
  await finish(t);
});

const XOR = 0x5a;

/** A stand-in for TLS: every octet is XORed, so plain text read through it is garbage. */
class XorStream implements ByteStream {
  #inner: ByteStream;
  constructor(inner: ByteStream) {
    this.#inner = inner;
  }
  async read(p: Uint8Array): Promise<number | null> {
    const n = await this.#inner.read(p);
    if (n) { for (let i = 0; i < n; i++) p[i] ^= XOR; }
    return n;
  }
  write(p: Uint8Array): Promise<number> {
    return this.#inner.write(p.map((b) => b ^ XOR));
  }
  close(): void {
    this.#inner.close();
  }
}

const TLS_INFO = { version: "TLS1.3", cipher: "FAKE", bits: 256 };

Deno.test("ServerSession STARTTLS swaps the stream, forgets the session state and drops pipelined plaintext", async () => {
  const t = await start({
    handler: {
      startTls(stream) {
        return Promise.resolve({ stream: new XorStream(stream), info: TLS_INFO });
      },
    },
  });
  await t.c.cmd("EHLO client.test", 250);
  await t.c.cmd("STARTTLS now", 501, "5.5.4");
  // The injected MAIL was sent in clear behind STARTTLS: it must never be obeyed.
  await t.c.send("STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n");
  await t.c.expect(220, "2.0.0");
  t.c.stream = new XorStream(t.clientEnd);
  await t.c.cmd("MAIL FROM:<a@example.test>", 503, "5.5.1");
  const ehlo = await t.c.cmd("EHLO client.test", 250);
  assert.ok(!ehlo.lines.includes("STARTTLS"));
  assert.deepEqual(t.session.tls, TLS_INFO);
  await t.c.cmd("STARTTLS", 503, "5.5.1");
  const help = await t.c.cmd("HELP", 214);
  assert.doesNotMatch(help.lines.join(" "), /STARTTLS/);
  await openTx(t.c);
  await t.c.cmd("DATA", 354);
  await t.c.send("secret\r\n.\r\n");
  await t.c.expect(250);
  assert.equal(t.seen.messages[0].content, "secret\r\n");
  assert.ok(!t.seen.calls.some((c) => c.includes("injected")));
  assert.ok(t.seen.errors.some((e) => /discarded \d+ octets/.test(e)));
  await t.c.cmd("QUIT", 221);
  await finish(t);
});

Deno.test("ServerSession STARTTLS before EHLO is 503; a failed handshake closes the session", async () => {
  const t = await start({
    handler: {
      startTls() {
        return Promise.reject(new Error("handshake failure"));
      },
    },
  });
  await t.c.cmd("STARTTLS", 503, "5.5.1");
  await t.c.cmd("HELO client.test", 250);
  await t.c.cmd("STARTTLS", 503, "5.5.1");
  await t.c.cmd("EHLO client.test", 250);
  await t.c.cmd("STARTTLS", 220, "2.0.0");
  await t.c.closed();
  await finish(t);
  assert.match(t.seen.closed!, /TLS handshake failed: handshake failure/);
});

Deno.test("ServerSession already on TLS (SMTPS) does not offer or accept STARTTLS", async () => {
  const t = await start({
    session: { tls: TLS_INFO },
    handler: { startTls: (s) => Promise.resolve({ stream: s, info: TLS_INFO }) },
  });
  const r = await t.c.cmd("EHLO client.test", 250);
  assert.ok(!r.lines.includes("STARTTLS"));
  await t.c.cmd("STARTTLS", 503, "5.5.1");
  await finish(t);
});

Deno.test("ServerSession answers a handler's SmtpError with that reply", async () => {
  const t = await start({
    handler: {
      mail(tx) {
        if (tx.sender.startsWith("spam")) throw new SmtpError(550, "5.7.1", "Sender refused");
      },
      helo(name) {
        if (name === "bad.test") throw new SmtpError(550, "5.7.1", "Bad HELO");
      },
    },
  });
  await t.c.cmd("EHLO bad.test", 550, "5.7.1");
  await t.c.cmd("MAIL FROM:<a@example.test>", 503, "5.5.1");
  await t.c.cmd("EHLO good.test", 250);
  const r = await t.c.cmd("MAIL FROM:<spam@example.test>", 550, "5.7.1");
  assert.equal(r.lines[0], "Sender refused");
  await t.c.cmd("MAIL FROM:<ok@example.test>", 250);
  await finish(t);
});

Deno.test("ServerSession turns a handler's unexpected error into 451 4.3.0 and carries on", async () => {
  let fail = true;
  const t = await start({
    handler: {
      mail() {
        if (fail) throw new Error("database is down: secret detail");
      },
      message() {
        return Promise.reject(new TypeError("spool bug"));
      },
    },
  });
  await t.c.cmd("EHLO client.test", 250);
  const r = await t.c.cmd("MAIL FROM:<a@example.test>", 451, "4.3.0");
  assert.doesNotMatch(r.raw, /secret/);
  assert.ok(t.seen.errors.some((e) => e.includes("database is down")));
  fail = false;
  await t.c.cmd("MAIL FROM:<a@example.test>", 250);
  await t.c.cmd("RCPT TO:<b@example.test>", 250);
  await t.c.cmd("DATA", 354);
  await t.c.send("x\r\n.\r\n");
  await t.c.expect(451, "4.3.0");
  await t.c.cmd("NOOP", 250);
  assert.equal(t.session.inTransaction, false);
  await finish(t);
});

Deno.test("ServerSession sends an SmtpError with close: true and then closes", async () => {
  const t = await start({
    handler: {
      rcpt() {
        throw new SmtpError(421, "4.7.0", "Go away", { close: true });
      },
    },
  });
  await t.c.cmd("EHLO client.test", 250);
  await t.c.cmd("MAIL FROM:<a@example.test>", 250);
  await t.c.cmd("RCPT TO:<b@example.test>", 421, "4.7.0");
  assert.equal(await t.c.closed(), "");
  await finish(t);
  assert.equal(t.seen.closed, "closed by policy");
});

Deno.test("ServerSession refuses a connection when the connect handler throws", async () => {
  const perm = await start({
    noGreeting: true,
    handler: {
      connect() {
        throw new SmtpError(554, "5.7.1", "Blocked");
      },
    },
  });
  await perm.c.expect(554, "5.7.1");
  await perm.c.closed();
  await finish(perm);
  const temp = await start({
    noGreeting: true,
    handler: {
      connect() {
        throw new Error("boom");
      },
    },
  });
  await temp.c.expect(421, "4.3.0");
  await temp.c.closed();
  await finish(temp);
});

Deno.test("ServerSession with refuseAll answers every command but QUIT with that reply", async () => {
  const t = await start({ session: { refuseAll: reply(503, "5.7.0", "PROXY header required") } });
  for (const cmd of ["EHLO client.test", "MAIL FROM:<a@example.test>", "NOOP", "STARTTLS", "FOO"]) {
    const r = await t.c.cmd(cmd, 503, "5.7.0");
    assert.equal(r.lines[0], "PROXY header required");
  }
  await t.c.cmd("QUIT", 221);
  await t.c.closed();
  await finish(t);
  assert.deepEqual(t.seen.calls, []);
});

Deno.test("ServerSession requestStop() while idle answers 421 4.3.2 and closes", async () => {
  const t = await start();
  await t.c.cmd("EHLO client.test", 250);
  await new Promise((r) => setTimeout(r, 10));
  t.session.requestStop();
  await t.c.expect(421, "4.3.2");
  await t.c.closed();
  await finish(t);
  assert.equal(t.seen.closed, "shutdown");
});

Deno.test("ServerSession requestStop() during a transaction lets it finish, then closes", async () => {
  const t = await start();
  await openTx(t.c);
  t.session.requestStop();
  await t.c.cmd("DATA", 354);
  await t.c.send("x\r\n.\r\n");
  await t.c.expect(250);
  await t.c.expect(421, "4.3.2");
  await t.c.closed();
  await finish(t);
  assert.equal(t.seen.messages.length, 1);
});

Deno.test("ServerSession refuses a message with a bare LF (550 5.6.0) and accepts the next one", async () => {
  const t = await start();
  await openTx(t.c);
  await t.c.cmd("DATA", 354);
  await t.c.send("Subject: x\r\n\r\nline\nmore\r\n.\r\n");
  await t.c.expect(550, "5.6.0");
  assert.equal(t.seen.messages.length, 0);
  assert.equal(t.session.inTransaction, false);
  await t.c.cmd("MAIL FROM:<a@example.test>", 250);
  await t.c.cmd("RCPT TO:<b@example.test>", 250);
  await t.c.cmd("DATA", 354);
  await t.c.send("clean\r\n.\r\n");
  await t.c.expect(250);
  assert.equal(t.seen.messages[0].content, "clean\r\n");
  await finish(t);
});

Deno.test("ServerSession: an SMTP-smuggling fake terminator never starts a second transaction", async () => {
  for (const mode of ["reject", "normalize"] as const) {
    const t = await start({ session: { bareLineEndings: mode } });
    await openTx(t.c);
    await t.c.cmd("DATA", 354);
    await t.c.send(
      "Subject: x\r\n\r\nhi\n.\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\nDATA\r\nforged\r\n.\r\n",
    );
    const r = await t.c.reply();
    if (mode === "reject") {
      assert.equal(r.code, 550);
      assert.equal(r.enhanced, "5.6.0");
      assert.equal(t.seen.messages.length, 0);
    } else {
      assert.equal(r.code, 250);
      assert.equal(t.seen.messages.length, 1);
      assert.equal(t.seen.messages[0].info.normalized, true);
      assert.match(
        t.seen.messages[0].content,
        /\r\nMAIL FROM:<evil@x\.test>\r\nRCPT TO:<v@y\.test>\r\nDATA\r\nforged\r\n$/,
      );
    }
    await t.c.cmd("NOOP", 250);
    assert.ok(!t.seen.calls.includes("mail <evil@x.test>"), mode);
    await finish(t);
  }
});

Deno.test("ServerSession refuses an oversize message (552 5.3.4) and accepts the next one", async () => {
  const t = await start({ limits: { messageSize: 1000 } });
  await openTx(t.c);
  await t.c.cmd("DATA", 354);
  await t.c.send(("x".repeat(98) + "\r\n").repeat(20) + ".\r\n");
  await t.c.expect(552, "5.3.4");
  assert.equal(t.seen.messages.length, 0);
  await t.c.cmd("MAIL FROM:<a@example.test>", 250);
  await t.c.cmd("RCPT TO:<b@example.test>", 250);
  await t.c.send("BDAT 1001 LAST\r\n" + "y".repeat(1001));
  await t.c.expect(552, "5.3.4");
  await t.c.cmd("MAIL FROM:<a@example.test>", 250);
  await t.c.cmd("RCPT TO:<b@example.test>", 250);
  await t.c.cmd("DATA", 354);
  await t.c.send("small\r\n.\r\n");
  await t.c.expect(250);
  assert.equal(t.seen.messages.length, 1);
  await finish(t);
});

Deno.test("ServerSession refuses a message with a line over the text line limit (550 5.6.0)", async () => {
  const t = await start();
  await openTx(t.c);
  await t.c.cmd("DATA", 354);
  await t.c.send("x".repeat(1001) + "\r\n.\r\n");
  await t.c.expect(550, "5.6.0");
  await finish(t);
});

Deno.test("ServerSession wants SMTPUTF8 on MAIL for a non-ASCII sender (553 5.6.7)", async () => {
  const t = await start();
  await t.c.cmd("EHLO client.test", 250);
  await t.c.cmd("MAIL FROM:<jörg@bücher.example>", 553, "5.6.7");
  await t.c.cmd("MAIL FROM:<jörg@bücher.example> SMTPUTF8", 250, "2.1.0");
  await t.c.cmd("RCPT TO:<ünï@bücher.example>", 250, "2.1.5");
  await t.c.cmd("RSET", 250);
  await t.c.cmd("MAIL FROM:<a@example.test>", 250);
  await t.c.cmd("RCPT TO:<ünï@bücher.example>", 553, "5.6.7");
  await finish(t);
});

Deno.test("ServerSession ends at once on an HTTP request", async () => {
  const t = await start();
  await t.c.send("GET / HTTP/1.1\r\n");
  await t.c.expect(554, "5.7.0");
  await t.c.closed();
  await finish(t);
});

Deno.test("ServerSession reads bytes given before it started (after a PROXY header)", async () => {
  const t = await start({ session: { initialInput: enc("EHLO early.test\r\n") }, noGreeting: true });
  // Input that was already there before the greeting is a synchronisation error like any other.
  await t.c.expect(554, "5.5.0");
  await t.c.closed();
  await finish(t);
});

Deno.test("ServerSession ends quietly when the client disconnects mid-DATA", async () => {
  const t = await start();
  await openTx(t.c);
  await t.c.cmd("DATA", 354);
  await t.c.send("partial");
  t.clientEnd.close();
  await withTimeout(t.done, 5000, "session end");
  assert.equal(t.seen.closed, "connection lost during DATA");
  assert.equal(t.seen.messages.length, 0);
});

Deno.test("ServerSession ends the AUTH exchange on an over-long response line (500 5.5.6) and reads the next command", async () => {
  const logins: string[] = [];
  const t = await start({
    session: { tls: TLS_INFO, auth: { mechanisms: ["PLAIN", "LOGIN"], required: false } },
    handler: {
      authenticate: (_m, cr) => {
        logins.push(cr.authcid);
        return Promise.resolve(cr.password === "pw");
      },
    },
  });
  await t.c.cmd("EHLO client.test", 250);
  await t.c.cmd("AUTH LOGIN", 334);
  // RFC 4954 4: a response line may be 12288 octets; this one is longer, sent whole.
  await t.c.cmd("A".repeat(13_000), 500, "5.5.6");
  // Back in command state: NOOP is a command, not a SASL response.
  await t.c.cmd("NOOP", 250, "2.0.0");
  // The same in pieces: the refusal comes before the line's end, whose rest is skipped.
  await t.c.cmd("AUTH PLAIN", 334);
  await t.c.send("B".repeat(13_000));
  await t.c.expect(500, "5.5.6");
  await t.c.send("B".repeat(100) + "\r\n");
  await t.c.cmd("NOOP", 250, "2.0.0");
  // A later AUTH still works, and nothing reached authenticate before it.
  assert.deepEqual(logins, []);
  await t.c.cmd("AUTH PLAIN " + btoa("\0user\0pw"), 235, "2.7.0");
  assert.deepEqual(logins, ["user"]);
  assert.ok(t.seen.errors.includes("AUTH exchange line too long"), t.seen.errors.join("; "));
  await finish(t);
});
