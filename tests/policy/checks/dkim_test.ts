/**
 * DKIM both ways against dkimpy: messages dkimpy signs (rsa-sha256, ed25519-sha256) verify in Ferry's dkim()
 * check, a tampered body fails, rsa-sha1 is refused and l= is reported; Ferry's signatures at delivery
 * (rsa and ed25519 at once, over-signed) verify in dkimpy, and fail there once the body is changed or a
 * second Subject is added. A bad key file is a configuration error naming it.
 */

import assert from "node:assert/strict";
import { RawClient, startTestFerry } from "../../helpers/ferry.ts";
import { startDownstream, startFerryIn, submit, waitFor } from "../../helpers/downstream.ts";
import { MemoryResolver } from "../../../src/dns/memory_resolver.ts";
import { dkim, type DkimOutcome } from "../../../src/policy/checks/dkim.ts";
import { verifyDkim } from "../../../src/policy/checks/dkim.ts";
import { mailauthResolver } from "../../../src/policy/checks/_mailauth_dns.ts";
import { ConfigError } from "../../../src/config/load.ts";
import { validateConfig } from "../../../src/config/load.ts";
import { startFerry } from "../../../src/main.ts";
import { MemoryLog } from "../../../src/core/log.ts";
import { createHash } from "node:crypto";
import { relaxedBody } from "../../../src/policy/checks/_dkim_canon.ts";
import { dkimpySign, dkimpyVerify, keyName, makeKey } from "./_dkim.ts";
import { runFerryCli, writeConfig } from "../../helpers/process.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

const rsa = makeKey("signed.test", "rsa1", "rsa-sha256");
const ed = makeKey("signed.test", "ed1", "ed25519-sha256");
const small = makeKey("small.test", "s", "rsa-sha256", 1024);

function resolverFor(keys = [rsa, ed, small]): MemoryResolver {
  const r = new MemoryResolver();
  for (const k of keys) r.set(keyName(k), "TXT", [k.record]);
  return r;
}

const MESSAGE = "From: Alice <alice@signed.test>\r\nTo: bob@example.test\r\nSubject: hello\r\n" +
  "Date: Sun, 06 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m1@signed.test>\r\n\r\nHello Bob,\r\n\r\n  indented  line \r\n";

async function deliverTo(port: number, message: Uint8Array): Promise<string> {
  const c = await RawClient.connect(port);
  try {
    await c.reply();
    await c.cmd("EHLO client.test");
    assert.equal((await c.cmd("MAIL FROM:<alice@signed.test>"))?.code, 250);
    assert.equal((await c.cmd("RCPT TO:<bob@example.test>"))?.code, 250);
    assert.equal((await c.cmd("DATA"))?.code, 354);
    const r = await c.cmd(dec.decode(message) + ".");
    assert.equal(r?.code, 250, r?.text);
    return /id=(\S+)/.exec(r!.text)![1];
  } finally {
    c.close();
  }
}

Deno.test("dkim(): dkimpy's rsa-sha256 and ed25519-sha256 signatures pass; a tampered body fails both", async () => {
  const signed = await dkimpySign(enc.encode(MESSAGE), [{ key: rsa }, { key: ed }]);
  const tampered = enc.encode(dec.decode(signed).replace("Hello Bob", "Hello Eve"));
  const f = await startTestFerry({ checks: [dkim()] }, { resolver: resolverFor() });
  try {
    const good = await deliverTo(f.port, signed);
    const o = (await f.spool.get(good))?.policy?.dkim as DkimOutcome;
    assert.deepEqual(o.signatures.map((s) => [s.result, s.algorithm, s.selector]).sort(), [
      ["pass", "ed25519-sha256", "ed1"],
      ["pass", "rsa-sha256", "rsa1"],
    ]);
    const stored = dec.decode(await f.spool.readData(good));
    assert.equal(stored.match(/^Authentication-Results:/gm)?.length, 1);
    assert.match(
      stored,
      /\tdkim=pass header\.d=signed\.test header\.s=ed1 header\.a=ed25519-sha256 header\.b=\S{8}/,
    );
    assert.match(
      stored,
      /\tdkim=pass header\.d=signed\.test header\.s=rsa1 header\.a=rsa-sha256 header\.b=\S{8}/,
    );

    const bad = await deliverTo(f.port, tampered);
    const ob = (await f.spool.get(bad))?.policy?.dkim as DkimOutcome;
    assert.deepEqual(ob.signatures.map((s) => s.result), ["fail", "fail"]);
    assert.match(dec.decode(await f.spool.readData(bad)), /dkim=fail \(body hash did not verify\)/);
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
  // dkimpy agrees on both messages.
  assert.deepEqual(await dkimpyVerify(signed, [rsa, ed]), [true, true]);
  assert.deepEqual(await dkimpyVerify(tampered, [rsa, ed]), [false, false]);
});

Deno.test("dkim(): rsa-sha1 is refused (RFC 8301) and a body length limit (l=) is reported with what it leaves unsigned", async () => {
  const resolver = mailauthResolver(resolverFor());
  const sha1 = await dkimpySign(enc.encode(MESSAGE), [{ key: rsa, algorithm: "rsa-sha1" }]);
  const o1 = await verifyDkim(sha1, resolver);
  assert.equal(o1.signatures.length, 1);
  assert.notEqual(o1.signatures[0].result, "pass");
  assert.match(o1.signatures[0].authResult, /^dkim=(policy|fail|neutral|permerror) /);

  const limited = await dkimpySign(enc.encode(MESSAGE), [{ key: rsa, length: true }]);
  const appended = enc.encode(dec.decode(limited) + "Appended by someone else\r\n");
  const o2 = await verifyDkim(appended, resolver);
  assert.equal(o2.signatures[0].result, "pass");
  assert.ok((o2.signatures[0].unsignedBodyOctets ?? 0) > 0, JSON.stringify(o2.signatures[0]));
  assert.match(o2.signatures[0].authResult, /body octets unsigned \(l=\)/);
});

Deno.test("dkim(): malformed signatures and a DNS timeout give results, never a crash; the server keeps serving", async () => {
  const resolver = resolverFor();
  resolver.fail("t._domainkey.slow.test", "TXT", "TIMEOUT");
  const f = await startTestFerry({ checks: [dkim()] }, { resolver });
  try {
    const bh = createHash("sha256").update(relaxedBody(enc.encode(MESSAGE))).digest("base64");
    const garbage = "DKIM-Signature: v=1; a=rsa-sha256; d=; s=;; b=!!!; bh=\r\n" +
      // A huge folded field: 200 continuation lines.
      "DKIM-Signature: v=1;" + " x=y;\r\n".repeat(200).replace(/\r\n$/, "") + "\r\n" +
      // A right body hash, so the verifier gets as far as the key lookup, which times out.
      `DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=slow.test; s=t; h=from; bh=${bh}; b=AAAA\r\n` +
      MESSAGE;
    const id = await deliverTo(f.port, enc.encode(garbage));
    const o = (await f.spool.get(id))?.policy?.dkim as DkimOutcome;
    assert.ok(o.signatures.length >= 2);
    assert.ok(o.signatures.every((s) => s.result !== "pass"));
    assert.ok(o.signatures.some((s) => s.result === "temperror"), JSON.stringify(o.signatures));
    const again = await deliverTo(f.port, enc.encode(MESSAGE));
    assert.deepEqual(((await f.spool.get(again))?.policy?.dkim as DkimOutcome).signatures, []);
    assert.match(dec.decode(await f.spool.readData(again)), /\tdkim=none\r\n/);
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});

/** A Ferry that signs signed.test with an RSA and an Ed25519 key at delivery to a scripted downstream. */
async function withSigningFerry(
  body: (
    f: Awaited<ReturnType<typeof startFerryIn>>,
    ds: ReturnType<typeof startDownstream>,
  ) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-dkim-sign-" });
  await Deno.writeTextFile(`${dir}/rsa.pem`, rsa.pem);
  await Deno.writeTextFile(`${dir}/ed.pem`, ed.pem);
  const ds = startDownstream();
  const f = await startFerryIn({
    routes: [{ domains: "*", hosts: ["127.0.0.1"], port: ds.port }],
    dkim: {
      sign: [
        { domain: "signed.test", selector: "rsa1", keyFile: `${dir}/rsa.pem` },
        { domain: "signed.test", selector: "ed1", keyFile: `${dir}/ed.pem`, algorithm: "ed25519-sha256" },
      ],
    },
  }, { resolver: new MemoryResolver() });
  try {
    await body(f, ds);
  } finally {
    await f.dispose();
    await ds.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("dkim.sign: Ferry signs at delivery with rsa and ed25519, over-signed; dkimpy verifies, tampering breaks it", () =>
  withSigningFerry(async (f, ds) => {
    await submit(f.port, ["bob@dest.test"], { from: "alice@signed.test", body: MESSAGE });
    await submit(f.port, ["bob@dest.test"], {
      from: "x@other.test",
      body: MESSAGE.replace("alice@signed.test", "x@other.test"),
    });
    await waitFor(() => ds.messages.length === 2, 8000, "two deliveries");
    const mine = ds.messages.find((m) => m.from === "alice@signed.test")!;
    const other = ds.messages.find((m) => m.from === "x@other.test")!;
    assert.doesNotMatch(other.data, /DKIM-Signature/);
    const sent = enc.encode(mine.data);
    const sigs = mine.data.match(/^DKIM-Signature:.*(\r\n[ \t].*)*/gm)!;
    assert.equal(sigs.length, 2);
    assert.match(sigs[0], /a=rsa-sha256/);
    assert.match(sigs[1], /a=ed25519-sha256/);
    // Over-signed: each field listed once more than it occurs.
    const h = /h=([^;]+);/.exec(sigs[0].replace(/\r\n[ \t]/g, ""))![1].split(":").map((x) => x.trim());
    assert.equal(h.filter((x) => x === "Subject").length, 2);
    assert.equal(h.filter((x) => x === "From").length, 2);
    assert.equal(h.filter((x) => x === "Cc").length, 1);
    assert.ok(f.memlog.has(/DKIM signed as d=signed\.test s=rsa1 a=rsa-sha256, d=signed\.test s=ed1/));

    assert.deepEqual(await dkimpyVerify(sent, [rsa, ed]), [true, true]);
    // Ferry's own verifier agrees.
    const ours = await verifyDkim(sent, mailauthResolver(resolverFor()));
    assert.deepEqual(ours.signatures.map((s) => s.result), ["pass", "pass"]);
    const body = enc.encode(mine.data.replace("Hello Bob", "Hello Eve"));
    assert.deepEqual(await dkimpyVerify(body, [rsa, ed]), [false, false]);
    const extraSubject = enc.encode(
      mine.data.replace("\r\nSubject: hello", "\r\nSubject: buy now\r\nSubject: hello"),
    );
    assert.deepEqual(await dkimpyVerify(extraSubject, [rsa, ed]), [false, false]);
  }));

Deno.test("dkim.sign: UTF-8 header fields and an 8-bit body with octets 0x80-0x9F (€, Ü, ✉) sign so that dkimpy verifies", async () => {
  // The canonicalization once decoded octets with TextDecoder("latin1"), which is windows-1252: 0x80-0x9F
  // became other code points and were hashed as different octets, so dkimpy failed such a message.
  await withSigningFerry(async (f, ds) => {
    const message = "From: \u00c5lice \u00dcn\u00efcode <alice@signed.test>\r\nTo: bob@example.test\r\n" +
      "Subject: h\u00e9llo \u2709 \u20ac5\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n" +
      "Message-ID: <m8@signed.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" +
      "Content-Transfer-Encoding: 8bit\r\n\r\nPreis: 5 \u20ac, \u00dcbung \u2709\r\n";
    // The octets this test is about are there: 0x82 (in €), 0x9C (in Ü and ✉).
    const octets = enc.encode(message);
    assert.ok(octets.includes(0x82) && octets.includes(0x9c));
    await submit(f.port, ["bob@dest.test"], {
      from: "alice@signed.test",
      mailParams: " BODY=8BITMIME",
      body: message,
    });
    await waitFor(() => ds.messages.length === 1, 8000, "the delivery");
    const sent = ds.messages[0].data;
    assert.equal((sent.match(/^DKIM-Signature:/gm) ?? []).length, 2);
    assert.ok(sent.endsWith(message), "the message arrives unchanged below the added fields");
    assert.deepEqual(await dkimpyVerify(enc.encode(sent), [rsa, ed]), [true, true]);
    // The signature still covers those octets: another 8-bit character in the Subject breaks it.
    const changed = enc.encode(sent.replace("\u2709 \u20ac5", "\u2709 \u20ac6"));
    assert.deepEqual(await dkimpyVerify(changed, [rsa, ed]), [false, false]);
  });
});

Deno.test("dkim.sign: a missing key file, a non-key and a key of the wrong type are config errors naming the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-dkim-" });
  await Deno.writeTextFile(`${dir}/junk.pem`, "not a key");
  await Deno.writeTextFile(`${dir}/ed.pem`, ed.pem);
  try {
    const config = validateConfig({
      listen: [{ address: "127.0.0.1", port: 0 }],
      spool: { dir: `${dir}/spool` },
      delivery: { enable: false },
      dkim: {
        sign: [
          { domain: "a.test", selector: "s", keyFile: `${dir}/missing.pem` },
          { domain: "a.test", selector: "s", keyFile: `${dir}/junk.pem` },
          { domain: "a.test", selector: "s", keyFile: `${dir}/ed.pem`, algorithm: "rsa-sha256" },
        ],
      },
    });
    const err = await startFerry(config, { log: new MemoryLog() }).then(() => undefined, (e) => e);
    assert.ok(err instanceof ConfigError, String(err));
    assert.equal(err.problems.length, 3);
    assert.match(err.problems[0], /^dkim\.sign\[0\]\.keyFile: ".*missing\.pem" cannot be read: /);
    assert.match(err.problems[1], /^dkim\.sign\[1\]\.keyFile: ".*junk\.pem" is not a PEM private key/);
    assert.match(
      err.problems[2],
      /^dkim\.sign\[2\]\.keyFile: ".*ed\.pem" holds a ed25519 key, but the algorithm is rsa-sha256/,
    );
    // The spool was never opened.
    assert.equal(await Deno.stat(`${dir}/spool`).then(() => true, () => false), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the ferry command exits 78 naming the file for a bad DKIM key, also under --check-config", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-dkim-cli-" });
  try {
    await Deno.writeTextFile(
      `${dir}/junk.pem`,
      "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    );
    const path = await writeConfig(
      dir,
      `{ listen: [{ address: "127.0.0.1", port: 0 }], spool: { dir: ${JSON.stringify(`${dir}/spool`)} },
        delivery: { enable: false },
        dkim: { sign: [{ domain: "a.test", selector: "s", keyFile: ${
        JSON.stringify(`${dir}/junk.pem`)
      } }] } }`,
    );
    for (const args of [["--config", path], ["--config", path, "--check-config"]]) {
      const r = await runFerryCli(args);
      assert.equal(r.code, 78, r.stderr);
      assert.match(r.stderr, /^config: dkim\.sign\[0\]\.keyFile: ".*junk\.pem" is not a PEM private key/m);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
