import assert from "node:assert/strict";
import {
  type OutboundEnvelope,
  SmtpClient,
  SmtpClientError,
  type SmtpClientOptions,
  SmtpTimeoutError,
} from "../../src/smtp/client.ts";
import { FakePeer, streamPair } from "./client_fake_peer.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const FAST: SmtpClientOptions = {
  timeouts: {
    greeting: 2000,
    command: 2000,
    mail: 2000,
    rcpt: 2000,
    dataInit: 2000,
    dataBlock: 2000,
    dataFinal: 2000,
  },
};
const MSG = enc("Subject: hi\r\n\r\n.leading dot\r\nbody\r\n");

function env(rcpts: string[], extra: Partial<OutboundEnvelope> = {}): OutboundEnvelope {
  return {
    from: "s@example.org",
    recipients: rcpts.map((address) => ({ address })),
    size: MSG.length,
    ...extra,
  };
}

async function session<T>(
  script: (p: FakePeer) => Promise<void>,
  fn: (c: SmtpClient) => Promise<T>,
  opts: SmtpClientOptions = FAST,
): Promise<{ value?: T; error?: unknown; peer: FakePeer; client: SmtpClient }> {
  const [a, b] = streamPair();
  const client = new SmtpClient(a, opts);
  const peer = new FakePeer(b);
  const done = script(peer);
  let value: T | undefined;
  let error: unknown;
  try {
    value = await fn(client);
  } catch (err) {
    error = err;
  }
  client.close();
  await done;
  peer.close();
  return { value, error, peer, client };
}

async function hi(c: SmtpClient) {
  await c.greeting();
  return await c.ehlo("client.example");
}

Deno.test("SmtpClient pipelines MAIL, all RCPTs and DATA in one go and matches replies in order", async () => {
  const { value, peer } = await session(async (p) => {
    await p.hello(["PIPELINING", "ENHANCEDSTATUSCODES"]);
    // No reply before all four commands are in: a client that waited for MAIL's reply would time out.
    const cmds = [await p.line(), await p.line(), await p.line(), await p.line()];
    assert.deepEqual(cmds, ["MAIL FROM:<s@example.org>", "RCPT TO:<a@x.test>", "RCPT TO:<b@x.test>", "DATA"]);
    await p.reply("250 2.1.0 Ok", "550 5.1.1 No such user", "250 2.1.5 Ok", "354 go");
    assert.equal(await p.dataRaw(), "Subject: hi\r\n\r\n..leading dot\r\nbody\r\n");
    await p.reply("250 2.0.0 queued as X");
    assert.equal(await p.line(), "QUIT");
    await p.reply("221 bye");
  }, async (c) => {
    await hi(c);
    const r = await c.send(env(["a@x.test", "b@x.test"]), MSG);
    await c.quit();
    return r;
  });
  assert.ok(value);
  assert.equal(value.mail.code, 250);
  assert.deepEqual(value.accepted, ["b@x.test"]);
  assert.deepEqual(value.delivered, ["b@x.test"]);
  assert.equal(value.method, "data");
  assert.deepEqual(value.recipients[0].reply, { code: 550, enhanced: "5.1.1", lines: ["No such user"] });
  assert.equal(value.recipients[0].stage, "rcpt");
  assert.equal(value.recipients[1].stage, "data");
  assert.equal(value.data?.code, 250);
  assert.equal(peer.lines.at(-1), "QUIT");
});

Deno.test("SmtpClient without PIPELINING waits for each reply before the next command", async () => {
  const { value } = await session(async (p) => {
    await p.hello(["8BITMIME"]);
    assert.equal(await p.line(), "MAIL FROM:<s@example.org> BODY=8BITMIME");
    assert.ok(await p.quietFor(50), "RCPT sent before the MAIL reply");
    await p.reply("250 ok");
    assert.equal(await p.line(), "RCPT TO:<a@x.test>");
    assert.ok(await p.quietFor(50));
    await p.reply("250 ok");
    assert.equal(await p.line(), "DATA");
    await p.reply("354 go");
    await p.dataRaw();
    await p.reply("250 ok");
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test"], { body: "8BITMIME" }), MSG);
  });
  assert.deepEqual(value?.delivered, ["a@x.test"]);
});

Deno.test("SmtpClient falls back to HELO when EHLO gets 5xx, then refuses an 8BITMIME message", async () => {
  const { value, error, peer } = await session(async (p) => {
    await p.reply("220 old");
    assert.equal(await p.line(), "EHLO client.example");
    await p.reply("502 5.5.2 what?");
    assert.equal(await p.line(), "HELO client.example");
    await p.reply("250 old");
    assert.ok(await p.nothingUntilClose(), "MAIL must not be sent");
  }, async (c) => {
    const caps = await hi(c);
    assert.equal(caps.esmtp, false);
    assert.equal(caps.pipelining, false);
    return await c.send(env(["a@x.test"], { body: "8BITMIME" }), MSG);
  });
  assert.equal(value, undefined);
  assert.ok(error instanceof SmtpClientError);
  assert.equal(error.kind, "local");
  assert.equal(error.stage, "mail");
  assert.equal(error.code, 554);
  assert.equal(error.enhanced, "5.6.3");
  assert.equal(error.temporary, false);
  assert.equal(peer.lines.length, 2);
});

Deno.test("SmtpClient does not fall back to HELO on a 4xx EHLO reply", async () => {
  const { error } = await session(async (p) => {
    await p.reply("220 hi");
    await p.line();
    await p.reply("421 4.3.2 busy");
  }, hi);
  assert.ok(error instanceof SmtpClientError);
  assert.equal(error.stage, "ehlo");
  assert.equal(error.code, 421);
  assert.equal(error.temporary, true);
});

Deno.test("SmtpClient greeting() throws on a 554 greeting and sends QUIT", async () => {
  const { error, peer } = await session(async (p) => {
    await p.reply("554 5.7.1 go away");
    assert.equal(await p.line(), "QUIT");
    await p.reply("221 bye");
  }, (c) => c.greeting());
  assert.ok(error instanceof SmtpClientError);
  assert.equal(error.stage, "greeting");
  assert.equal(error.kind, "reply");
  assert.equal(error.code, 554);
  assert.equal(error.text, "go away");
  assert.deepEqual(peer.lines, ["QUIT"]);
});

Deno.test("SmtpClient uses PRDR when offered and applies per-recipient data replies", async () => {
  const { value } = await session(async (p) => {
    await p.hello(["PIPELINING", "PRDR"]);
    assert.equal(await p.line(), "MAIL FROM:<s@example.org> PRDR");
    for (let i = 0; i < 4; i++) await p.line();
    await p.reply("250 ok", "250 ok", "550 5.1.1 unknown", "250 ok", "354 go");
    await p.dataRaw();
    await p.reply("353 PRDR content analysis beginning", "250 2.0.0 a ok", "550 5.7.1 c refuses", "250 done");
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test", "b@x.test", "c@x.test"], { prdr: true }), MSG);
  });
  assert.ok(value);
  assert.equal(value.prdr, true);
  assert.deepEqual(value.accepted, ["a@x.test", "c@x.test"]);
  assert.deepEqual(value.delivered, ["a@x.test"]);
  assert.equal(value.recipients[1].stage, "rcpt");
  assert.equal(value.recipients[2].prdr?.code, 550);
  assert.equal(value.recipients[2].reply.enhanced, "5.7.1");
  assert.equal(value.recipients[2].stage, "data");
  assert.equal(value.data?.code, 250);
});

Deno.test("SmtpClient treats a plain reply instead of 353 as the answer for every PRDR recipient", async () => {
  const { value } = await session(async (p) => {
    await p.hello(["PRDR"]);
    assert.equal(await p.line(), "MAIL FROM:<s@example.org> PRDR");
    await p.reply("250 ok");
    await p.line();
    await p.reply("250 ok");
    await p.line();
    await p.reply("250 ok");
    await p.line();
    await p.reply("354 go");
    await p.dataRaw();
    await p.reply("554 5.7.1 spam");
    assert.equal(await p.line(), "RSET");
    await p.reply("250 ok");
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test", "b@x.test"], { prdr: true }), MSG);
  });
  assert.equal(value?.prdr, false);
  assert.deepEqual(value?.delivered, []);
  assert.equal(value?.recipients[1].reply.code, 554);
});

Deno.test("SmtpClient does not ask for PRDR from a peer that does not offer it", async () => {
  const { value } = await session(async (p) => {
    await p.hello(["PIPELINING"]);
    assert.equal(await p.line(), "MAIL FROM:<s@example.org>");
    await p.line();
    await p.line();
    await p.reply("250 ok", "250 ok", "354 go");
    await p.dataRaw();
    await p.reply("250 ok");
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test"], { prdr: true }), MSG);
  });
  assert.deepEqual(value?.delivered, ["a@x.test"]);
});

Deno.test("SmtpClient sends RSET and no data when every recipient is refused", async () => {
  const { value } = await session(async (p) => {
    await p.hello([]);
    await p.line();
    await p.reply("250 ok");
    await p.line();
    await p.reply("550 5.1.1 nope");
    await p.line();
    await p.reply("450 4.2.0 later");
    assert.equal(await p.line(), "RSET");
    await p.reply("250 ok");
    assert.ok(await p.nothingUntilClose());
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test", "b@x.test"]), MSG);
  });
  assert.ok(value);
  assert.equal(value.method, "none");
  assert.equal(value.data, undefined);
  assert.deepEqual(value.accepted, []);
  assert.deepEqual(value.recipients.map((r) => r.reply.code), [550, 450]);
});

Deno.test("SmtpClient with PIPELINING and no accepted recipient reads DATA's refusal and sends no data", async () => {
  const { value, peer } = await session(async (p) => {
    await p.hello(["PIPELINING"]);
    for (let i = 0; i < 3; i++) await p.line();
    await p.reply("250 ok", "550 no", "554 5.5.1 no valid recipients");
    assert.equal(await p.line(), "RSET");
    await p.reply("250 ok");
    assert.ok(await p.nothingUntilClose());
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test"]), MSG);
  });
  assert.equal(value?.dataCommand?.code, 554);
  assert.equal(value?.method, "none");
  assert.ok(!peer.lines.some((l) => l.includes("leading dot")));
});

Deno.test("SmtpClient reports a failed MAIL for every recipient without sending RCPT", async () => {
  const { value, peer } = await session(async (p) => {
    await p.hello([]);
    await p.line();
    await p.reply("451 4.7.1 greylisted");
    assert.ok(await p.nothingUntilClose());
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test", "b@x.test"]), MSG);
  });
  assert.equal(value?.mail.code, 451);
  assert.deepEqual(value?.recipients.map((r) => [r.stage, r.reply.code, r.rcpt]), [
    ["mail", 451, undefined],
    ["mail", 451, undefined],
  ]);
  assert.equal(peer.lines.filter((l) => l.startsWith("RCPT")).length, 0);
});

Deno.test("SmtpClient reports a 4xx after the data as temporary for the accepted recipients and resets", async () => {
  const { value } = await session(async (p) => {
    await p.hello(["PIPELINING"]);
    for (let i = 0; i < 4; i++) await p.line();
    await p.reply("250 ok", "250 ok", "550 no", "354 go");
    await p.dataRaw();
    await p.reply("452 4.3.1 disk full");
    assert.equal(await p.line(), "RSET");
    await p.reply("250 ok");
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test", "b@x.test"]), MSG);
  });
  assert.deepEqual(value?.delivered, []);
  assert.deepEqual(value?.recipients.map((r) => [r.stage, r.reply.code]), [["data", 452], ["rcpt", 550]]);
});

Deno.test("SmtpClient turns a garbled reply into a protocol error and closes", async () => {
  const { error, client } = await session(async (p) => {
    await p.hello([]);
    await p.line();
    await p.reply("250-ok", "550 mismatched");
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test"]), MSG);
  });
  assert.ok(error instanceof SmtpClientError);
  assert.equal(error.kind, "protocol");
  assert.equal(error.stage, "mail");
  assert.equal(error.temporary, true);
  assert.equal(client.closed, true);
});

Deno.test("SmtpClient times out a silent peer with a typed error and closes the connection", async () => {
  const t0 = Date.now();
  const { error, client } = await session(async (p) => {
    await p.hello([]);
    await p.line(); // MAIL, never answered
    await p.line(); // returns undefined once the client closes
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test"]), MSG);
  }, { timeouts: { mail: 150 } });
  assert.ok(error instanceof SmtpTimeoutError);
  assert.equal(error.stage, "mail");
  assert.equal(error.timeoutMs, 150);
  assert.equal(error.kind, "timeout");
  assert.ok(Date.now() - t0 < 1500);
  assert.equal(client.closed, true);
});

Deno.test("SmtpClient times out a peer that never greets", async () => {
  const { error } = await session(
    async (p) => {
      await p.line();
    },
    (c) => c.greeting(),
    { timeouts: { greeting: 100 } },
  );
  assert.ok(error instanceof SmtpTimeoutError);
  assert.equal(error.stage, "greeting");
});

Deno.test("SmtpClient reports a connection the peer closes as a temporary connection error", async () => {
  const { error } = await session(async (p) => {
    await p.hello([]);
    await p.line();
    p.close();
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test"]), MSG);
  });
  assert.ok(error instanceof SmtpClientError);
  assert.equal(error.kind, "connection");
  assert.equal(error.code, 421);
});

Deno.test("SmtpClient sends SIZE and refuses a message above the peer's limit before MAIL", async () => {
  const { value, error, peer } = await session(async (p) => {
    await p.hello(["SIZE 100"]);
    assert.equal(await p.line(), `MAIL FROM:<s@example.org> SIZE=${MSG.length}`);
    await p.reply("250 ok");
    await p.line();
    await p.reply("250 ok");
    await p.line();
    await p.reply("354 go");
    await p.dataRaw();
    await p.reply("250 ok");
    assert.ok(await p.nothingUntilClose(), "second MAIL must not be sent");
  }, async (c) => {
    await hi(c);
    assert.equal(c.capabilities?.sizeLimit, 100);
    const ok = await c.send(env(["a@x.test"]), MSG);
    assert.deepEqual(ok.delivered, ["a@x.test"]);
    return await c.send(env(["a@x.test"], { size: 101 }), MSG);
  });
  assert.equal(value, undefined);
  assert.ok(error instanceof SmtpClientError);
  assert.equal(error.code, 552);
  assert.equal(error.enhanced, "5.3.4");
  assert.equal(peer.lines.filter((l) => l.startsWith("MAIL")).length, 1);
});

Deno.test("SmtpClient refuses SMTPUTF8 mail to a peer without SMTPUTF8 and sends it to one with it", async () => {
  const utf8 = env(["jürgen@x.test"]);
  const refused = await session(async (p) => {
    await p.hello(["8BITMIME"]);
    assert.ok(await p.nothingUntilClose());
  }, async (c) => {
    await hi(c);
    return await c.send(utf8, MSG);
  });
  assert.ok(refused.error instanceof SmtpClientError);
  assert.equal(refused.error.code, 553);
  assert.equal(refused.error.enhanced, "5.6.7");

  const sent = await session(async (p) => {
    await p.hello(["SMTPUTF8", "8BITMIME"]);
    assert.equal(await p.line(), "MAIL FROM:<s@example.org> SMTPUTF8");
    await p.reply("250 ok");
    assert.equal(await p.line(), "RCPT TO:<jürgen@x.test>");
    await p.reply("250 ok");
    await p.line();
    await p.reply("354 go");
    await p.dataRaw();
    await p.reply("250 ok");
  }, async (c) => {
    await hi(c);
    return await c.send(utf8, MSG);
  });
  assert.deepEqual(sent.value?.delivered, ["jürgen@x.test"]);
});

Deno.test("SmtpClient passes DSN parameters xtext-encoded only to a DSN-aware peer", async () => {
  const dsnEnv = env([], {
    recipients: [{
      address: "a@x.test",
      notify: ["success", "FAILURE"],
      orcpt: { type: "rfc822", address: "a+b=c@y.test" },
    }],
    ret: "HDRS",
    envid: "id 1+",
  });
  const withDsn = await session(async (p) => {
    await p.hello(["PIPELINING", "DSN"]);
    assert.equal(await p.line(), "MAIL FROM:<s@example.org> RET=HDRS ENVID=id+201+2B");
    assert.equal(await p.line(), "RCPT TO:<a@x.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb+3Dc@y.test");
    await p.line();
    await p.reply("250 ok", "250 ok", "354 go");
    await p.dataRaw();
    await p.reply("250 ok");
  }, async (c) => {
    await hi(c);
    return await c.send(dsnEnv, MSG);
  });
  assert.equal(withDsn.value?.dsnPassed, true);

  const without = await session(async (p) => {
    await p.hello(["PIPELINING"]);
    assert.equal(await p.line(), "MAIL FROM:<s@example.org>");
    assert.equal(await p.line(), "RCPT TO:<a@x.test>");
    await p.line();
    await p.reply("250 ok", "250 ok", "354 go");
    await p.dataRaw();
    await p.reply("250 ok");
  }, async (c) => {
    await hi(c);
    return await c.send(dsnEnv, MSG);
  });
  assert.equal(without.value?.dsnPassed, false);
  assert.deepEqual(without.value?.delivered, ["a@x.test"]);
});

Deno.test("SmtpClient refuses addresses and parameters that could break the command line", async () => {
  const bad: OutboundEnvelope[] = [
    env(["a@x.test\r\nRCPT TO:<evil@x>"]),
    env(["a@x.test"], { from: "s@x\nDATA" }),
    env([], { recipients: [{ address: "a@x.test", notify: ["NEVER", "SUCCESS"] }] }),
    env([], { recipients: [{ address: "a@x.test", orcpt: { type: "rfc822;x", address: "a" } }] }),
    env([]),
  ];
  const { value, peer } = await session(async (p) => {
    await p.hello(["DSN"]);
    assert.ok(await p.nothingUntilClose());
  }, async (c) => {
    await hi(c);
    const errors = [];
    for (const e of bad) errors.push(await c.send(e, MSG).then(() => undefined, (err) => err));
    return errors;
  });
  assert.ok(value?.every((e) => e instanceof SmtpClientError && e.kind === "local" && e.code >= 500));
  assert.equal(peer.lines.length, 1);
});

Deno.test("SmtpClient sends the message with BDAT LAST, unstuffed, when CHUNKING is offered", async () => {
  const { value } = await session(async (p) => {
    await p.hello(["PIPELINING", "CHUNKING"]);
    await p.line();
    await p.line();
    await p.reply("250 ok", "250 ok");
    assert.equal(await p.line(), `BDAT ${MSG.length} LAST`);
    assert.equal(dec(await p.bytes(MSG.length)), dec(MSG));
    await p.reply("250 2.0.0 ok");
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test"]), MSG);
  });
  assert.equal(value?.method, "bdat");
  assert.deepEqual(value?.delivered, ["a@x.test"]);
});

Deno.test("SmtpClient splits BDAT into chunks and stops at a refused chunk", async () => {
  const data = enc("0123456789abcdefghij12345");
  const ok = await session(async (p) => {
    await p.hello(["CHUNKING"]);
    await p.line();
    await p.reply("250 ok");
    await p.line();
    await p.reply("250 ok");
    for (const [head, n] of [["BDAT 10", 10], ["BDAT 10", 10], ["BDAT 5 LAST", 5]] as const) {
      assert.equal(await p.line(), head);
      await p.bytes(n);
      await p.reply("250 ok");
    }
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test"], { size: data.length }), data);
  }, { ...FAST, chunkSize: 10 });
  assert.deepEqual(ok.value?.delivered, ["a@x.test"]);

  const refused = await session(async (p) => {
    await p.hello(["CHUNKING"]);
    await p.line();
    await p.reply("250 ok");
    await p.line();
    await p.reply("250 ok");
    assert.equal(await p.line(), "BDAT 10");
    await p.bytes(10);
    await p.reply("552 5.3.4 too big");
    assert.equal(await p.line(), "RSET");
    await p.reply("250 ok");
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test"], { size: data.length }), data);
  }, { ...FAST, chunkSize: 10 });
  assert.deepEqual(refused.value?.delivered, []);
  assert.equal(refused.value?.recipients[0].stage, "bdat");
  assert.equal(refused.value?.recipients[0].reply.code, 552);
});

Deno.test("SmtpClient startTls() swaps the stream and requires a new EHLO", async () => {
  const [inner, innerPeer] = streamPair();
  const { value, error, peer } = await session(async (p) => {
    await p.hello(["STARTTLS", "PIPELINING"]);
    assert.equal(await p.line(), "STARTTLS");
    await p.reply("220 go ahead");
    // The "TLS" stream is a fresh pipe: the rest of the conversation happens there.
    const tls = new FakePeer(innerPeer);
    assert.equal(await tls.line(), "EHLO client.example");
    await tls.reply("250-fake", "250 8BITMIME");
    tls.close();
  }, async (c) => {
    await hi(c);
    let seen = false;
    await c.startTls((s) => {
      seen = s !== undefined;
      return Promise.resolve(inner);
    });
    assert.ok(seen);
    assert.equal(c.tls, true);
    assert.equal(c.capabilities, undefined);
    await assert.rejects(c.send(env(["a@x.test"]), MSG), /EHLO required/);
    const caps = await c.ehlo("client.example");
    assert.equal(caps.pipelining, false);
    assert.equal(caps.eightBitMime, true);
    return caps;
  });
  assert.equal(error, undefined);
  assert.ok(value);
  assert.deepEqual(peer.lines, ["EHLO client.example", "STARTTLS"]);
});

Deno.test("SmtpClient startTls() rejects replies injected before the TLS handshake", async () => {
  let upgraded = false;
  const { error, client } = await session(async (p) => {
    await p.hello(["STARTTLS"]);
    await p.line();
    await p.send("220 go ahead\r\n250-fake\r\n250 PIPELINING\r\n");
  }, async (c) => {
    await hi(c);
    await c.startTls((s) => {
      upgraded = true;
      return Promise.resolve(s);
    });
  });
  assert.ok(error instanceof SmtpClientError);
  assert.equal(error.kind, "protocol");
  assert.equal(error.stage, "starttls");
  assert.equal(upgraded, false);
  assert.equal(client.closed, true);
});

Deno.test("SmtpClient startTls() throws with the reply when STARTTLS is refused, and when not offered", async () => {
  const { error } = await session(async (p) => {
    await p.hello(["STARTTLS"]);
    await p.line();
    await p.reply("454 4.7.0 TLS not available");
  }, async (c) => {
    await hi(c);
    await c.startTls((s) => Promise.resolve(s));
  });
  assert.ok(error instanceof SmtpClientError);
  assert.equal(error.stage, "starttls");
  assert.equal(error.code, 454);

  const notOffered = await session(async (p) => {
    await p.hello([]);
  }, async (c) => {
    await hi(c);
    await c.startTls((s) => Promise.resolve(s));
  });
  assert.ok(notOffered.error instanceof SmtpClientError);
  assert.equal(notOffered.error.kind, "local");
});

Deno.test("SmtpClient closes after a 421 and rset() reports the closed connection", async () => {
  const { value, client } = await session(async (p) => {
    await p.hello([]);
    await p.line();
    await p.reply("421 4.3.2 shutting down");
  }, async (c) => {
    await hi(c);
    const r = await c.send(env(["a@x.test"]), MSG);
    await assert.rejects(c.rset(), (e) => e instanceof SmtpClientError && e.kind === "connection");
    return r;
  });
  assert.equal(value?.mail.code, 421);
  assert.equal(client.closed, true);
});

Deno.test("SmtpClient takes a 421 to RCPT as the answer to everything still owed and sends no data", async () => {
  const { value, client, peer } = await session(async (p) => {
    await p.hello(["CHUNKING"]);
    await p.line();
    await p.reply("250 ok");
    await p.line();
    await p.reply("250 ok");
    await p.line();
    await p.reply("421 4.4.2 bye");
    assert.equal(await p.line(), undefined);
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test", "b@x.test", "c@x.test"]), MSG);
  });
  assert.ok(value);
  assert.deepEqual(value.recipients.map((r) => [r.stage, r.reply.code]), [["bdat", 421], ["rcpt", 421], [
    "rcpt",
    421,
  ]]);
  assert.deepEqual(value.delivered, []);
  assert.equal(client.closed, true);
  assert.equal(peer.lines.filter((l) => l.startsWith("RCPT")).length, 2);
});

Deno.test("SmtpClient send() awaits beforeData after the 354, and before the LAST chunk of BDAT", async () => {
  // What the peer had received when beforeData was called: the data cannot have gone out yet.
  const seen: string[] = [];
  const atHold: string[][] = [];
  const beforeData = () => {
    atHold.push([...seen]);
    return Promise.resolve();
  };
  const data = await session(async (p) => {
    await p.hello(["PIPELINING"]);
    for (let i = 0; i < 3; i++) seen.push((await p.line())!);
    await p.reply("250 ok", "250 ok", "354 go");
    seen.push(await p.dataRaw());
    await p.reply("250 2.0.0 ok");
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test"]), MSG, { beforeData });
  });
  assert.deepEqual(data.value?.delivered, ["a@x.test"]);
  assert.deepEqual(atHold, [["MAIL FROM:<s@example.org>", "RCPT TO:<a@x.test>", "DATA"]]);
  assert.equal(seen.length, 4);

  seen.length = 0;
  atHold.length = 0;
  const bytes = enc("0123456789abcdefghij12345");
  const bdat = await session(async (p) => {
    await p.hello(["CHUNKING"]);
    for (const _ of ["MAIL", "RCPT"]) {
      seen.push((await p.line())!);
      await p.reply("250 ok");
    }
    for (const n of [10, 10, 5]) {
      seen.push((await p.line())!);
      await p.bytes(n);
      await p.reply("250 ok");
    }
  }, async (c) => {
    await hi(c);
    return await c.send(env(["a@x.test"], { size: bytes.length }), bytes, { beforeData });
  }, { ...FAST, chunkSize: 10 });
  assert.deepEqual(bdat.value?.delivered, ["a@x.test"]);
  assert.deepEqual(atHold, [["MAIL FROM:<s@example.org>", "RCPT TO:<a@x.test>", "BDAT 10", "BDAT 10"]]);
  assert.equal(seen.at(-1), "BDAT 5 LAST");
});
