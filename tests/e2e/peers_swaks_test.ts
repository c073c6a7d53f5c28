/** End to end with swaks as the client: PIPELINING, PRDR and relay refusals seen by a real peer. */

import assert from "node:assert/strict";
import { withFerry } from "../helpers/ferry.ts";
import { runSwaks, spoolIdIn } from "../helpers/peers.ts";
import type { PolicyMiddleware } from "../../src/policy/context.ts";

const dec = new TextDecoder();

Deno.test("swaks with --pipeline delivers to two recipients and the spool holds the envelope and body", async () => {
  await withFerry({}, async (f) => {
    const msg = `${f.dir}/message.eml`;
    await Deno.writeTextFile(msg, "Subject: pipelined\nX-Test: 1\n\nhello from swaks\n.leading dot");
    const r = await runSwaks(f.port, [
      "--helo",
      "swaks.test",
      "--from",
      "alice@sender.test",
      "--to",
      "bob@example.test,carol@example.test",
      "--pipeline",
      "--data",
      `@${msg}`,
    ]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // swaks really pipelined: MAIL, both RCPTs and DATA went out before the first reply came back.
    assert.match(
      r.stdout,
      / -> MAIL FROM:<alice@sender\.test>\n -> RCPT TO:<bob@example\.test>\n -> RCPT TO:<carol@example\.test>\n -> DATA\n<- {2}250 /,
    );
    const id = spoolIdIn(r.stdout);
    assert.ok(id, r.stdout);
    const env = await f.spool.get(id);
    assert.equal(env?.sender, "alice@sender.test");
    assert.deepEqual(env?.recipients.map((x) => x.address), ["bob@example.test", "carol@example.test"]);
    assert.equal(env?.protocol, "esmtp");
    assert.equal(env?.client.helo, "swaks.test");
    const data = dec.decode(await f.spool.readData(id));
    assert.match(data, /^Received: from swaks\.test /);
    // swaks turns LF into CRLF and dot-stuffs; the spool holds the message as written, unstuffed.
    assert.ok(
      data.endsWith("\r\nSubject: pipelined\r\nX-Test: 1\r\n\r\nhello from swaks\r\n.leading dot\r\n"),
      JSON.stringify(data.slice(-80)),
    );
    assert.equal(env?.size, data.length);
  });
});

Deno.test("swaks sees a foreign recipient refused with 550 5.7.1 while the local one is delivered", async () => {
  await withFerry({}, async (f) => {
    const r = await runSwaks(f.port, [
      "--from",
      "alice@sender.test",
      "--to",
      "bob@example.test,victim@elsewhere.test",
      "--pipeline",
    ]);
    assert.match(r.stdout, /<\*\* +550 5\.7\.1 Relay access denied/);
    const id = spoolIdIn(r.stdout);
    assert.ok(id, r.stdout);
    const env = await f.spool.get(id);
    assert.deepEqual(env?.recipients.map((x) => x.address), ["bob@example.test"]);
    assert.equal(await f.spool.count(), 1);
  });
});

Deno.test("swaks --prdr gets 353 and a per-recipient verdict; only the accepted recipient is spooled", async () => {
  const noCarol: PolicyMiddleware<"prdr"> = async function no_carol(c, next) {
    if (c.recipient.local === "carol") c.reject("Carol does not want this", 550, "5.7.1");
    await next();
  };
  await withFerry({ prdr: { enable: true }, policy: { prdr: [noCarol] } }, async (f) => {
    const r = await runSwaks(f.port, [
      "--from",
      "alice@sender.test",
      "--to",
      "bob@example.test,carol@example.test",
      "--prdr",
      "--pipeline",
    ]);
    assert.match(r.stdout, / -> MAIL FROM:<alice@sender\.test> PRDR\n/);
    assert.match(r.stdout, /<- {2}353 /);
    assert.match(r.stdout, /<- {2}250 2\.1\.5 <bob@example\.test> OK/);
    assert.match(r.stdout, /<\*\* +550 5\.7\.1 <carol@example\.test> Carol does not want this/);
    const id = spoolIdIn(r.stdout);
    assert.ok(id, r.stdout);
    const env = await f.spool.get(id);
    assert.deepEqual(env?.recipients.map((x) => x.address), ["bob@example.test"]);
    const data = dec.decode(await f.spool.readData(id));
    assert.match(data, /\tfor <bob@example\.test>;/);
    assert.ok(f.memlog.has("PRDR rejected <carol@example.test>: 550 5.7.1"));
  });
});

Deno.test("swaks with a 20 KB body against a 10KB limit gets 552 5.3.4 and nothing is spooled", async () => {
  await withFerry({ limits: { messageSize: "10KB" } }, async (f) => {
    const r = await runSwaks(f.port, [
      "--from",
      "alice@sender.test",
      "--to",
      "bob@example.test",
      "--body",
      "x".repeat(70) + "\n".repeat(1) + ("y".repeat(79) + "\n").repeat(256),
    ]);
    assert.match(r.stdout, /<\*\* +552 5\.3\.4 /);
    assert.equal(await f.spool.count(), 0);
  });
});
