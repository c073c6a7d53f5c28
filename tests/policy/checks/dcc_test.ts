/**
 * The dcc check against the scripted dccifd (tests/helpers/dccifd.ts, the one stand-in: DCC is not in
 * Debian): Exim's mapping of the overall result, deferOk, the X-DCC header, and per-recipient answers with PRDR.
 */
import assert from "node:assert/strict";
import { RawClient, type TestFerry, withFerry } from "../../helpers/ferry.ts";
import { startScriptedDccifd } from "../../helpers/dccifd.ts";
import { dcc, type DccOptions } from "../../../src/policy/checks/dcc.ts";

const dec = new TextDecoder();

async function open(f: TestFerry): Promise<RawClient> {
  const c = await RawClient.connect(f.port);
  assert.equal((await c.reply())?.code, 220);
  assert.equal((await c.cmd("EHLO client.test"))?.code, 250);
  return c;
}

/** Sends one message without PRDR; returns the final reply. */
async function send(f: TestFerry, rcpts: string[], text: string) {
  const c = await open(f);
  try {
    assert.equal((await c.cmd("MAIL FROM:<a@sender.test>"))?.code, 250);
    for (const r of rcpts) assert.equal((await c.cmd(`RCPT TO:<${r}>`))?.code, 250);
    assert.equal((await c.cmd("DATA"))?.code, 354);
    await c.send(`Subject: dcc\r\n\r\n${text}\r\n.\r\n`);
    return (await c.reply(10_000))!;
  } finally {
    c.close();
  }
}

async function withDcc(opts: Omit<DccOptions, "address">, fn: (f: TestFerry) => Promise<void>) {
  const d = startScriptedDccifd();
  try {
    await withFerry(
      { prdr: { enable: true }, checks: [dcc({ ...opts, address: d.address, timeout: "2s" })] },
      fn,
    );
  } finally {
    await d.stop();
  }
}

Deno.test("dcc check: A accepts with the X-DCC header, R and G fail (defer by default, reject when told), T defers", async () => {
  await withDcc({}, async (f) => {
    const ok = await send(f, ["u@example.test"], "hello");
    assert.equal(ok.code, 250);
    const id = /id=(\S+)/.exec(ok.text)![1];
    const stored = dec.decode(await f.spool.readData(id));
    assert.match(stored, /^X-DCC-Ferry-Test-Metrics: dccifd\.test 1234; bulk Body=1 Fuz1=1\r$/m);
    assert.deepEqual((await f.spool.get(id))?.policy?.dcc, {
      result: "A",
      recipients: { "u@example.test": "A" },
      header: "X-DCC-Ferry-Test-Metrics: dccifd.test 1234; bulk Body=1 Fuz1=1",
    });
    const rej = await send(f, ["u@example.test"], "DCC-REJECT");
    assert.equal(rej.code, 451);
    assert.match(rej.text, /^4\.7\.1 Rejected by DCC/);
    assert.equal((await send(f, ["u@example.test"], "DCC-GREY")).code, 451);
    const temp = await send(f, ["u@example.test"], "DCC-TEMP");
    assert.equal(temp.code, 451);
    assert.match(temp.text, /^4\.3\.0 /);
    // S (some recipients refused) is an accept for the message as a whole, as in Exim.
    assert.equal((await send(f, ["u@example.test", "spamtrap@example.test"], "hello")).code, 250);
  });
  await withDcc({ fail: "reject", deferOk: true }, async (f) => {
    const rej = await send(f, ["u@example.test"], "DCC-REJECT");
    assert.equal(rej.code, 550);
    assert.match(rej.text, /^5\.7\.1 /);
    assert.equal((await send(f, ["u@example.test"], "DCC-TEMP")).code, 250);
  });
});

Deno.test("dcc check: with PRDR each recipient gets dccifd's answer for it; dccifd silent defers", async () => {
  await withDcc({ fail: "reject" }, async (f) => {
    const c = await open(f);
    try {
      assert.equal((await c.cmd("MAIL FROM:<a@sender.test> PRDR"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<u@example.test>"))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<spamtrap@example.test>"))?.code, 250);
      assert.equal((await c.cmd("DATA"))?.code, 354);
      await c.send("Subject: dcc\r\n\r\nhello\r\n.\r\n");
      assert.equal((await c.reply())?.code, 353);
      assert.equal((await c.reply(10_000))?.code, 250);
      const trap = await c.reply();
      assert.equal(trap?.code, 550);
      assert.match(trap!.text, /^5\.7\.1 <spamtrap@example\.test> Rejected by DCC/);
      const final = await c.reply();
      assert.equal(final?.code, 250);
      const id = /id=(\S+)/.exec(final!.text)![1];
      assert.match(dec.decode(await f.spool.readData(id)), /^X-DCC-Ferry-Test-Metrics: /m);
    } finally {
      c.close();
    }
    const t0 = Date.now();
    const silent = await send(f, ["u@example.test"], "DCC-SILENT");
    assert.equal(silent.code, 451);
    assert.ok(Date.now() - t0 < 8000);
    assert.ok(f.memlog.has(/dcc failed: dccifd 127\.0\.0\.1 \d+: no answer within 2000 ms/));
  });
});
