/**
 * The check API end to end: checks made by factories, one state per message, verdicts as values (reject,
 * defer, quarantine), typed variables across stages and checks, one merged Authentication-Results header,
 * header edits, envelope rewriting at data, and the outbound chain at delivery.
 */

import assert from "node:assert/strict";
import { RawClient, withFerry } from "../helpers/ferry.ts";
import { startDownstream, startFerryIn, submit, waitFor } from "../helpers/downstream.ts";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import { accept, type Check, defer, quarantine, reject } from "../../mod.ts";
import type { DeliveryContext } from "../../src/policy/delivery_context.ts";

const dec = new TextDecoder();

async function session(port: number, helo = "client.test"): Promise<RawClient> {
  const c = await RawClient.connect(port);
  assert.equal((await c.reply())?.code, 220);
  assert.equal((await c.cmd(`EHLO ${helo}`))?.code, 250);
  return c;
}

async function send(c: RawClient, sender: string, rcpts: string[], body: string) {
  const mail = await c.cmd(`MAIL FROM:<${sender}>`);
  if (mail?.code !== 250) return { mail };
  const rcpt = [];
  for (const r of rcpts) rcpt.push(await c.cmd(`RCPT TO:<${r}>`));
  if (!rcpt.some((r) => r?.code === 250)) return { mail, rcpt };
  assert.equal((await c.cmd("DATA"))?.code, 354);
  return { mail, rcpt, data: await c.cmd(body + ".") };
}

/** A check recording the order of calls; its verdicts are chosen by the sender's local part. */
function recorder(name: string, calls: string[]): Check {
  let messages = 0;
  return {
    name,
    connect: () => void calls.push(`${name}:connect`),
    helo: (c) => void calls.push(`${name}:helo ${c.helo}`),
    message: (c) => {
      const n = ++messages;
      calls.push(`${name}:message ${n} ${c.sender}`);
      return {
        mail: (c) => {
          calls.push(`${name}:mail ${n}`);
          if (c.sender.startsWith("spoof@")) {
            return reject("Sender not authorised", { code: 550, enhanced: "5.7.23" });
          }
          if (c.sender.startsWith("later@")) return defer("DNS busy", { enhanced: "4.7.24" });
          c.set(`${name}Seen`, n);
          return accept({ authResults: [`x-${name}=pass smtp.mailfrom=${c.sender}`] });
        },
        rcpt: (c) => {
          calls.push(`${name}:rcpt ${n} ${c.recipient.address}`);
          if (c.recipient.local === "nobody") return reject("No such user", { enhanced: "5.1.1" });
        },
        data: (c) => {
          calls.push(`${name}:data ${n}`);
          return accept({ headers: [{ name: `X-${name}`, value: `seen ${c.get(`${name}Seen`)}` }] });
        },
      };
    },
  };
}

Deno.test("checks: one state per message, methods in list order per stage, verdicts as SMTP replies", async () => {
  const calls: string[] = [];
  await withFerry({ checks: [recorder("one", calls), recorder("two", calls)] }, async (f) => {
    const c = await session(f.port);
    try {
      const spoof = await send(c, "spoof@sender.test", ["a@example.test"], "");
      assert.equal(spoof.mail?.code, 550);
      assert.match(spoof.mail!.text, /^5\.7\.23 Sender not authorised/);
      const later = await send(c, "later@sender.test", ["a@example.test"], "");
      assert.equal(later.mail?.code, 451);
      assert.match(later.mail!.text, /^4\.7\.24 DNS busy/);
      const ok = await send(
        c,
        "ok@sender.test",
        ["a@example.test", "nobody@example.test"],
        "Subject: s\r\n\r\nb\r\n",
      );
      assert.equal(ok.rcpt?.[1]?.code, 550);
      assert.match(ok.rcpt![1]!.text, /^5\.1\.1 No such user/);
      assert.equal(ok.data?.code, 250);
      const id = /id=(\S+)/.exec(ok.data!.text)![1];
      const stored = dec.decode(await f.spool.readData(id));
      // One merged Authentication-Results header right after Received, then the verdicts' header fields.
      assert.match(
        stored,
        /^Received: [^]*?\r\nAuthentication-Results: ferry\.test;\r\n\tx-one=pass smtp\.mailfrom=ok@sender\.test;\r\n\tx-two=pass smtp\.mailfrom=ok@sender\.test\r\nX-one: seen 3\r\nX-two: seen 3\r\nSubject: s\r\n/,
      );
      assert.equal(stored.match(/^Authentication-Results:/gm)?.length, 1);
      const env = await f.spool.get(id);
      assert.deepEqual(env?.policy, {
        oneSeen: 3,
        twoSeen: 3,
        authResults: ["x-one=pass smtp.mailfrom=ok@sender.test", "x-two=pass smtp.mailfrom=ok@sender.test"],
      });
      assert.ok(f.memlog.has("check one rejected: Sender not authorised"));
    } finally {
      c.close();
    }
  });
  // The first check's rejection at mail ends the stage: the second check's mail method never ran for it.
  assert.deepEqual(calls.slice(0, 8), [
    "one:connect",
    "two:connect",
    "one:helo client.test",
    "two:helo client.test",
    "one:message 1 spoof@sender.test",
    "two:message 1 spoof@sender.test",
    "one:mail 1",
    "one:message 2 later@sender.test",
  ]);
  assert.ok(calls.includes("two:rcpt 3 nobody@example.test") === false, "a rejected rcpt stops the chain");
  assert.ok(calls.includes("two:data 3"));
});

Deno.test("Authentication-Results claiming our authserv-id are removed; others, and ours in comments, are kept", async () => {
  const body = "Authentication-Results: Ferry.Test; spf=pass smtp.mailfrom=forged.test\r\n" +
    "Authentication-Results: (comment) ferry.test 1;\r\n dkim=pass header.d=forged.test\r\n" +
    "Authentication-Results: upstream.test; spf=fail (ferry.test) smtp.mailfrom=x.test\r\n" +
    "Subject: keep\r\n\r\nbody\r\n";
  await withFerry({ checks: [{ name: "none" }] }, async (f) => {
    const c = await session(f.port);
    try {
      const r = await send(c, "s@sender.test", ["a@example.test"], body);
      const stored = dec.decode(await f.spool.readData(/id=(\S+)/.exec(r.data!.text)![1]));
      assert.doesNotMatch(stored, /forged\.test/);
      assert.match(stored, /\r\nAuthentication-Results: ferry\.test; none\r\n/);
      assert.match(stored, /\r\nAuthentication-Results: upstream\.test; spf=fail \(ferry\.test\)/);
      assert.match(stored, /\r\nSubject: keep\r\n\r\nbody\r\n$/);
    } finally {
      c.close();
    }
  });
});

Deno.test("data stage: removeHeader, replaceHeader and envelope rewriting change what is spooled", async () => {
  await withFerry({
    policy: {
      data: [async function edit(c, next) {
        c.removeHeader("X-Secret");
        c.removeHeader("Received", (_v, i) => i === 1);
        const subject = c.headers.find((h) => h.name.toLowerCase() === "subject")?.value ?? "";
        c.replaceHeader("Subject", `[tagged] ${subject}`);
        c.setSender("bounces@example.test");
        c.rewriteRecipient("list@example.test", ["a@example.test", "b@example.test"]);
        c.rewriteRecipient("gone@example.test", []);
        await next();
      }],
    },
  }, async (f) => {
    const c = await session(f.port);
    try {
      const body =
        "Received: from one\r\nX-Secret: a\r\n\tfolded\r\nReceived: from two\r\nSubject: hello\r\n" +
        "Received: from three\r\n\r\nbody\r\n";
      const r = await send(
        c,
        "s@sender.test",
        ["list@example.test", "gone@example.test", "c@example.test"],
        body,
      );
      const id = /id=(\S+)/.exec(r.data!.text)![1];
      const stored = dec.decode(await f.spool.readData(id));
      assert.match(
        stored,
        /\r\nSubject: \[tagged\] hello\r\nReceived: from one\r\nReceived: from three\r\n\r\nbody/,
      );
      assert.doesNotMatch(stored, /X-Secret|folded|from two|Subject: hello/);
      const env = await f.spool.get(id);
      assert.equal(env?.sender, "bounces@example.test");
      assert.deepEqual(env?.recipients.map((x) => [x.address, x.orcpt?.address]), [
        ["a@example.test", "list@example.test"],
        ["b@example.test", "list@example.test"],
        ["c@example.test", undefined],
      ]);
    } finally {
      c.close();
    }
  });
});

Deno.test("a check that throws becomes 451 4.3.0 naming the check; open() and close() run at start and stop", async () => {
  const life: string[] = [];
  const broken: Check = {
    name: "broken",
    open: (s) => void life.push(`open ${s.hostname} ${s.authservId}`),
    close: () => void life.push("close"),
    message: () => ({
      rcpt: () => {
        throw new Error("store unreachable");
      },
    }),
  };
  await withFerry({ checks: [broken], authservId: "mx.auth.test" }, async (f) => {
    assert.deepEqual(life, ["open ferry.test mx.auth.test"]);
    const c = await session(f.port);
    try {
      const r = await send(c, "s@sender.test", ["a@example.test"], "");
      assert.equal(r.rcpt?.[0]?.code, 451);
      assert.match(r.rcpt![0]!.text, /^4\.3\.0/);
      assert.ok(f.memlog.has(/rcpt policy step "check broken" failed: store unreachable/));
    } finally {
      c.close();
    }
  });
  assert.deepEqual(life, ["open ferry.test mx.auth.test", "close"]);
});

Deno.test("quarantine: without quarantine.route the recipient is held in the queue; with it, it takes that route", async () => {
  const q: Check = {
    name: "q",
    message: () => ({
      rcpt: (c) => c.recipient.local === "suspect" ? quarantine("looks odd") : undefined,
      data: (c) =>
        c.headers.some((h) => /quarantine me/.test(h.value)) ? quarantine("whole message") : undefined,
    }),
  };
  {
    const ds = startDownstream();
    const f = await startFerryIn({
      checks: [q],
      routes: [{ domains: "*", hosts: ["127.0.0.1"], port: ds.port }],
    }, { resolver: new MemoryResolver() });
    try {
      const id = await submit(f.port, ["suspect@dest.test", "fine@dest.test"]);
      const whole = await submit(f.port, ["a@dest.test"], { body: "Subject: quarantine me\r\n\r\nx\r\n" });
      await waitFor(() => ds.messages.length === 1, 8000, "the fine recipient's delivery");
      assert.deepEqual(ds.messages[0].rcpts, ["fine@dest.test"]);
      // The suspect recipient is its own message, in the hold state, with the reason.
      const heldLine = f.memlog.lines.find((l) =>
        l.text.includes(`R=${id} (quarantined part) held: looks odd`)
      );
      assert.ok(heldLine, f.memlog.lines.map((l) => l.text).join("\n"));
      const heldId = String(heldLine.fields?.id);
      const row = await f.spool.row(heldId);
      assert.equal(row?.state, "hold");
      assert.match(row?.reason ?? "", /quarantined: looks odd/);
      assert.deepEqual((await f.spool.get(heldId))?.recipients.map((r) => r.address), ["suspect@dest.test"]);
      // A message quarantined at data is held whole, under its own id.
      assert.equal((await f.spool.row(whole))?.state, "hold");
      assert.ok(f.memlog.has(/held: whole message for a@dest\.test/));
      await waitFor(() => f.memlog.has("Completed"), 8000, "the first message to complete");
      assert.equal(ds.messages.length, 1);
    } finally {
      await f.dispose();
      await ds.stop();
    }
  }

  const normal = startDownstream();
  const held = startDownstream();
  const resolver = new MemoryResolver({ records: {} });
  const f = await startFerryIn({
    checks: [q],
    routes: [
      { name: "review", domains: [], hosts: [`127.0.0.1`], port: held.port },
      { domains: "*", hosts: ["127.0.0.1"], port: normal.port },
    ],
    quarantine: { route: "review" },
  }, { resolver });
  try {
    const id = await submit(f.port, ["suspect@dest.test", "fine@dest.test"]);
    await waitFor(() => normal.messages.length === 1 && held.messages.length === 1, 8000, "both deliveries");
    assert.deepEqual(normal.messages[0].rcpts, ["fine@dest.test"]);
    assert.deepEqual(held.messages[0].rcpts, ["suspect@dest.test"]);
    // Logged once Ferry has the 250, which the downstream sends after it counted the message.
    await waitFor(() => f.memlog.has(/=> suspect@dest\.test R=review /), 8000, "the delivery logged");
    assert.ok(f.memlog.has(new RegExp(`<= sender@client\\.test .* Q=suspect@dest\\.test for`)));
    assert.equal(typeof id, "string");
  } finally {
    await f.dispose();
    await normal.stop();
    await held.stop();
  }
});

Deno.test("data stage: rewrites that land on one mailbox store it once (the first kept, the domain's case aside)", async () => {
  await withFerry({
    policy: {
      data: [async function alias(c, next) {
        // An alias onto a recipient already there, two aliases onto one address, one naming it twice.
        c.rewriteRecipient("team@example.test", ["c@example.test", "d@EXAMPLE.test", "d@example.test"]);
        c.rewriteRecipient("boss@example.test", ["d@example.test"]);
        await next();
      }],
    },
  }, async (f) => {
    const c = await session(f.port);
    try {
      const r = await send(
        c,
        "s@sender.test",
        ["c@example.test", "team@example.test", "boss@example.test", "D@example.test"],
        "Subject: x\r\n\r\nbody\r\n",
      );
      const id = /id=(\S+)/.exec(r.data!.text)![1];
      const env = await f.spool.get(id);
      // D@ is another mailbox than d@: a local part's case is the receiving host's to judge.
      assert.deepEqual(env?.recipients.map((x) => [x.address, x.orcpt?.address]), [
        ["c@example.test", undefined],
        ["d@EXAMPLE.test", "team@example.test"],
        ["D@example.test", undefined],
      ]);
    } finally {
      c.close();
    }
  });
});

Deno.test("the outbound chain sees route and recipients, adds headers and rewrites the envelope per route", async () => {
  const ds = startDownstream();
  const seen: { route: string; recipients: readonly string[]; spf: unknown }[] = [];
  const sign = async function sign(c: DeliveryContext, next: () => Promise<void>) {
    seen.push({ route: c.route.name, recipients: c.recipients, spf: c.get("spf") });
    if (c.recipients.some((r) => r.startsWith("later@"))) c.defer("signing key busy");
    c.addHeader("X-Signed", `for ${c.route.name}`);
    c.addHeader("X-Top", `${c.headers.length} fields`);
    c.setSender(`srs0=${c.sender}`);
    c.rewriteRecipient("alias@dest.test", "real@dest.test");
    await next();
  };
  const f = await startFerryIn({
    policy: { mail: [async (c, next) => (c.set("spf", "pass"), await next())] },
    routes: [{ name: "out", domains: "*", hosts: ["127.0.0.1"], port: ds.port }],
    outbound: [sign],
  }, { resolver: new MemoryResolver() });
  try {
    const id = await submit(f.port, ["alias@dest.test", "b@dest.test"]);
    await waitFor(() => ds.messages.length === 1, 8000, "delivery");
    const m = ds.messages[0];
    assert.equal(m.from, "srs0=sender@client.test");
    assert.deepEqual(m.rcpts, ["real@dest.test", "b@dest.test"]);
    assert.match(m.data, /^X-Top: \d+ fields\r\nX-Signed: for out\r\nReceived: /);
    assert.deepEqual(seen[0], { route: "out", recipients: ["alias@dest.test", "b@dest.test"], spf: "pass" });
    // The spool and the log keep the original recipient.
    // Logged once Ferry has the 250, which the downstream sends after it counted the message.
    await waitFor(() => f.memlog.has(/=> alias@dest\.test R=out /), 8000, "the delivery logged");
    await waitFor(async () => (await f.spool.get(id)) === undefined, 8000, "completion");

    const later = await submit(f.port, ["later@dest.test"]);
    await waitFor(
      () => f.memlog.has(/== later@dest\.test R=out T=smtp defer: signing key busy/),
      8000,
      "defer",
    );
    assert.equal((await f.spool.get(later))?.recipients[0].status, "pending");
    assert.equal(ds.messages.length, 1);
  } finally {
    await f.dispose();
    await ds.stop();
  }
});
