/**
 * SRS: Ferry's own forward and reverse against postsrsd 1.10 (Debian's postsrsd on free loopback ports,
 * spoken to over Postfix's TCP table protocol): the same secret gives byte-identical SRS0/SRS1 addresses,
 * each reverses the other's; rotation, expiry, case and base64url handling; and in a running Ferry, the
 * sender rewritten at delivery over an MX route and an SRS recipient reversed at RCPT (550 5.1.1 if invalid).
 */

import assert from "node:assert/strict";
import { isSrs, SrsError, srsForward, srsReverse, srsTimestamp } from "../../src/policy/srs.ts";
import { freePort } from "../helpers/sink.ts";
import { RawClient, startTestFerry } from "../helpers/ferry.ts";
import { startDownstream, waitFor } from "../helpers/downstream.ts";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";

const DAY = 86_400_000;
const opts = { secrets: ["tops3cret"] };

Deno.test("srsForward()/srsReverse(): round trips, SRS1 for SRS senders, rotation, expiry, case and base64url", () => {
  const now = Date.UTC(2026, 11, 6);
  const fwd = srsForward("Alice@Example.org", "srs.ferry.test", { ...opts, now });
  assert.match(
    fwd,
    new RegExp(`^SRS0=[A-Za-z0-9+/]{4}=${srsTimestamp(now)}=Example\\.org=Alice@srs\\.ferry\\.test$`),
  );
  assert.equal(srsReverse(fwd, { ...opts, now }), "Alice@Example.org");
  // Hashes compare case-insensitively (a case-folding hop), the local part's case is kept.
  assert.equal(srsReverse(fwd.toUpperCase(), { ...opts, now }), "ALICE@EXAMPLE.ORG");
  // A second forwarder makes SRS1 naming the first one's host; its reverse is the first SRS0 address.
  const srs1 = srsForward(fwd, "second.test", { secrets: ["other"], now });
  assert.match(srs1, /^SRS1=[^=]{4}=srs\.ferry\.test==[^=]{4}=..=Example\.org=Alice@second\.test$/);
  assert.equal(srsReverse(srs1, { secrets: ["other"], now }), fwd);
  // Rotation: an address made with the old secret still reverses while that secret is listed.
  assert.equal(srsReverse(fwd, { secrets: ["new", "tops3cret"], now }), "Alice@Example.org");
  assert.throws(() => srsReverse(fwd, { secrets: ["new"], now }), /hash does not match/);
  // Expiry: 21 days by default, maxAgeDays otherwise.
  assert.equal(srsReverse(fwd, { ...opts, now: now + 21 * DAY }), "Alice@Example.org");
  assert.throws(() => srsReverse(fwd, { ...opts, now: now + 22 * DAY }), /timestamp expired/);
  assert.throws(() => srsReverse(fwd, { ...opts, maxAgeDays: 3, now: now + 4 * DAY }), SrsError);
  // base64url: emitted on request, accepted either way.
  let url = "";
  for (let i = 0; !/[-_]/.test(url) && i < 200; i++) {
    url = srsForward(`user${i}@example.org`, "srs.ferry.test", { ...opts, now, base64url: true });
  }
  assert.match(url, /^SRS0=[A-Za-z0-9_-]{4}=/);
  assert.match(srsReverse(url, { ...opts, now }), /^user\d+@example\.org$/);
  // Tampering and malformed input are refused.
  assert.throws(() => srsReverse(fwd.replace("Alice", "Mallory"), { ...opts, now }), /hash does not match/);
  for (const bad of ["SRS0=@x", "SRS0=abcd@x", "SRS0=abcd=ZZ=@x", "SRS1=abcd@x", "plain@x"]) {
    assert.throws(() => srsReverse(bad, { ...opts, now }), SrsError, bad);
  }
  assert.ok(isSrs("srs0+abcd=XY=d=l") && !isSrs("srs2=x"));
});

/** A private postsrsd; `ask` speaks Postfix's tcp_table protocol. */
async function startPostsrsd(secret: string, domain: string) {
  const dir = await Deno.makeTempDir({ prefix: "ferry-postsrsd-" });
  await Deno.writeTextFile(`${dir}/secret`, secret + "\n");
  const [fwd, rev] = [await freePort(), await freePort()];
  const child = new Deno.Command("postsrsd", {
    args: [
      "-s",
      `${dir}/secret`,
      "-d",
      domain,
      "-l",
      "127.0.0.1",
      "-f",
      String(fwd),
      "-r",
      String(rev),
      "-t",
      "10",
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const ask = async (port: number, key: string): Promise<string> => {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await c.write(new TextEncoder().encode(`get ${key}\n`));
      let text = "";
      const buf = new Uint8Array(1024);
      while (!text.endsWith("\n")) {
        const n = await c.read(buf);
        if (n === null) break;
        text += new TextDecoder().decode(buf.subarray(0, n));
      }
      return decodeURIComponent(text.trim());
    } finally {
      c.close();
    }
  };
  await waitFor(
    async () => {
      try {
        return (await ask(fwd, "probe@example.org")).startsWith("200 ");
      } catch {
        return false;
      }
    },
    15_000,
    "postsrsd listening",
  );
  return {
    forward: (a: string) => ask(fwd, a),
    reverse: (a: string) => ask(rev, a),
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("postsrsd 1.10 and Ferry: identical SRS0 and SRS1 addresses, and each reverses the other's", async () => {
  const p = await startPostsrsd("tops3cret", "srs.ferry.test");
  try {
    const senders = [
      "alice@example.org",
      "Mixed.Case+tag@Example.ORG",
      "SRS0=abcd=XY=example.org=alice@other.test",
      "SRS1=abcd=fwd.test==xyzw=XY=example.org=alice@other.test",
      "o'brien@sub.example.co.uk",
      // SMTPUTF8 senders (RFC 6531): postsrsd hashes the UTF-8 octets.
      "\u00e5lice@example.org",
      "J\u00fcrgen.M\u00fcller@b\u00fccher.example",
    ];
    for (const s of senders) {
      const theirs = await p.forward(s);
      const ours = srsForward(s, "srs.ferry.test", opts);
      assert.equal(theirs, `200 ${ours}`, s);
      assert.notEqual(ours, s);
      const back = await p.reverse(ours);
      const expected = s.startsWith("SRS1=")
        ? "200 SRS0=xyzw=XY=example.org=alice@fwd.test"
        : s.startsWith("SRS0=")
        ? `200 ${s}`
        : `200 ${s}`;
      assert.equal(back, expected, `postsrsd reversing ${ours}`);
      assert.equal(`200 ${srsReverse(theirs.slice(4), opts)}`, expected, `Ferry reversing ${theirs}`);
    }
    // postsrsd refuses what Ferry refuses: a forged hash.
    const forged = srsForward("alice@example.org", "srs.ferry.test", { secrets: ["wrong"] });
    assert.match(await p.reverse(forged), /^(500|400)/);
    assert.throws(() => srsReverse(forged, opts), /hash does not match/);
  } finally {
    await p.stop();
  }
});

Deno.test("srs in Ferry: a forwarded sender is rewritten over an MX route; an SRS bounce address is reversed at RCPT", async () => {
  const ds = startDownstream({ dsn: true });
  const resolver = new MemoryResolver({
    records: {
      "dest.test": { MX: [{ exchange: "mx.dest.test", preference: 10 }] },
      "example.org": { MX: [{ exchange: "mx.dest.test", preference: 10 }] },
      "mx.dest.test": { A: ["127.0.0.1"] },
    },
  });
  const f = await startTestFerry({
    relay: { domains: ["example.test"], clients: ["127.0.0.0/8"] },
    routes: [{ domains: "*", mx: true, port: ds.port }],
    delivery: { enable: true },
    srs: { domain: "srs.ferry.test", secrets: ["tops3cret"] },
  }, { resolver });
  try {
    const c = await RawClient.connect(f.port);
    await c.reply();
    await c.cmd("EHLO fwd.test");
    // A forwarded message (foreign sender) and one from our own domain.
    const long = `${"x".repeat(50)}@example.org`;
    for (const from of ["alice@example.org", "me@example.test", long]) {
      assert.equal((await c.cmd(`MAIL FROM:<${from}>`))?.code, 250);
      assert.equal((await c.cmd("RCPT TO:<bob@dest.test>"))?.code, 250);
      assert.equal((await c.cmd("DATA"))?.code, 354);
      assert.equal((await c.cmd("Subject: fwd\r\n\r\nx\r\n."))?.code, 250);
    }
    await waitFor(() => ds.messages.length === 3, 8000, "three deliveries");
    // The SRS form of a 50-octet local part would pass the 64-octet limit: it goes out unrewritten.
    assert.ok(ds.messages.some((m) => m.from === long));
    assert.ok(f.memlog.has("not rewritten: the SRS local part would be longer than 64 octets"));
    const froms = ds.messages.map((m) => m.from).filter((a) => a !== long).sort((a, b) =>
      Number(isSrs(a)) - Number(isSrs(b))
    );
    assert.match(froms[1], /^SRS0=[A-Za-z0-9+/]{4}=..=example\.org=alice@srs\.ferry\.test$/);
    assert.equal(froms[0], "me@example.test");

    // The bounce comes back to the SRS address: it is reversed to the original sender.
    assert.equal((await c.cmd(`MAIL FROM:<>`))?.code, 250);
    assert.equal((await c.cmd(`RCPT TO:<${froms[1]}>`))?.code, 250);
    const bad = await c.cmd(`RCPT TO:<${froms[1].replace("alice", "mallory")}>`);
    assert.equal(bad?.code, 550);
    assert.match(bad!.text, /^5\.1\.1 Invalid or expired SRS address/);
    assert.equal((await c.cmd("DATA"))?.code, 354);
    assert.equal((await c.cmd("Subject: bounce\r\n\r\nx\r\n."))?.code, 250);
    // Delivered to the original sender, with the SRS address kept as its ORCPT (RFC 3461).
    await waitFor(() => ds.messages.length === 4, 8000, "the bounce delivered");
    const bounce = ds.messages[3];
    assert.equal(bounce.from, "");
    assert.deepEqual(bounce.rcpts, ["alice@example.org"]);
    // ORCPT is xtext (RFC 3461 §4): "=" is sent as "+3D".
    const xtext = froms[1].replaceAll("+", "+2B").replaceAll("=", "+3D");
    assert.ok(bounce.rcptLines[0].endsWith(` ORCPT=rfc822;${xtext}`), bounce.rcptLines[0]);
    assert.ok(f.memlog.has(/SRS: <SRS0=.*> refused: hash does not match/));
    c.close();
  } finally {
    await f.stop();
    await ds.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("srs in Ferry: an SRS recipient given again in other case or form, or as the address it reverses to, is answered as a repeat and stored once", async () => {
  const f = await startTestFerry({
    relay: { domains: ["example.test"], clients: ["127.0.0.0/8"] },
    srs: { domain: "srs.ferry.test", secrets: ["tops3cret"] },
  });
  try {
    const srs = srsForward("user@orig.test", "srs.ferry.test", { secrets: ["tops3cret"] });
    const [, hash, stamp] = srs.split("=");
    // Every spelling the SRS decoder accepts: lower-case tag, hash, timestamp and domains; another separator.
    const lower = `srs0=${hash.toLowerCase()}=${stamp.toLowerCase()}=orig.test=user@srs.ferry.test`;
    const upper = srs.toUpperCase();
    const plus = srs.replace(/^SRS0=/, "SRS0+");
    for (const variant of [lower, upper, plus]) {
      assert.equal(srsReverse(variant, { secrets: ["tops3cret"] }).toLowerCase(), "user@orig.test", variant);
    }
    const c = await RawClient.connect(f.port);
    await c.reply();
    await c.cmd("EHLO fwd.test");
    const send = async (rcpts: string[]) => {
      assert.equal((await c.cmd("MAIL FROM:<>"))?.code, 250);
      const replies = [];
      for (const r of rcpts) replies.push((await c.cmd(`RCPT TO:<${r}>`))!.lines.join("\n"));
      assert.equal((await c.cmd("DATA"))?.code, 354);
      const done = await c.cmd("Subject: bounce\r\n\r\nx\r\n.");
      const id = /id=(\S+)/.exec(done!.text)?.[1];
      assert.ok(id, done?.text);
      return { replies, recipients: (await f.spool.get(id))!.recipients.map((r) => r.address) };
    };
    const repeat = "250 2.1.5 Recipient OK (duplicate ignored)";

    // The SRS address first: each other spelling, and the original address itself, is a repeat.
    const first = await send([
      srs,
      lower,
      upper,
      plus,
      "user@orig.test",
      "user@ORIG.TEST",
      "other@orig.test",
    ]);
    assert.deepEqual(first.replies, [
      "250 2.1.5 Recipient OK",
      repeat,
      repeat,
      repeat,
      repeat,
      repeat,
      "250 2.1.5 Recipient OK",
    ]);
    assert.deepEqual(first.recipients, ["user@orig.test", "other@orig.test"]);

    // The original address first, then SRS spellings; a local part in other case is another mailbox.
    const second = await send(["user@orig.test", "user@Orig.Test", upper, srs, "User@orig.test"]);
    assert.deepEqual(second.replies, [
      "250 2.1.5 Recipient OK",
      repeat,
      repeat,
      repeat,
      "250 2.1.5 Recipient OK",
    ]);
    assert.deepEqual(second.recipients, ["user@orig.test", "User@orig.test"]);
    c.close();
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});
