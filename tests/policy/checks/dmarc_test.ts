/**
 * DMARC: the acceptance case end to end (a dkimpy-signed message from a domain with SPF and DMARC records
 * served by unbound arrives with one Authentication-Results showing spf, dkim and dmarc pass; a spoofed one
 * is refused per p=reject), python3-authheaders as a second opinion on the same messages, and the policy
 * rules (alignment, p/sp, pct sampling, Exim's statuses) over an in-memory resolver.
 */

import assert from "node:assert/strict";
import { RawClient, startTestFerry } from "../../helpers/ferry.ts";
import { startUnbound } from "../../helpers/unbound.ts";
import { MemoryResolver } from "../../../src/dns/memory_resolver.ts";
import { spf } from "../../../src/policy/checks/spf.ts";
import { dkim, verifyDkim } from "../../../src/policy/checks/dkim.ts";
import { dmarc, type DmarcOutcome, evaluateDmarc } from "../../../src/policy/checks/dmarc.ts";
import { mailauthResolver } from "../../../src/policy/checks/_mailauth_dns.ts";
import { dkimpySign, makeKey } from "./_dkim.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

const key = makeKey("sender.com", "sel", "rsa-sha256");

function message(from: string, subject = "hello"): string {
  return `From: ${from}\r\nTo: bob@example.test\r\nSubject: ${subject}\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n` +
    `Message-ID: <${crypto.randomUUID()}@sender.com>\r\n\r\nHi Bob\r\n`;
}

async function send(port: number, sender: string, data: Uint8Array) {
  const c = await RawClient.connect(port);
  try {
    await c.reply();
    await c.cmd("EHLO mail.sender.com");
    const mail = await c.cmd(`MAIL FROM:<${sender}>`);
    await c.cmd("RCPT TO:<bob@example.test>");
    await c.cmd("DATA");
    const r = await c.cmd(dec.decode(data) + ".");
    return { mail, data: r, id: /id=(\S+)/.exec(r?.text ?? "")?.[1] };
  } finally {
    c.close();
  }
}

const AUTHHEADERS = `
import json, sys, base64
import dns.resolver, spf, authheaders
r = dns.resolver.Resolver(configure=False)
r.nameservers = ["127.0.0.1"]
r.port = int(sys.argv[1])
dns.resolver.default_resolver = r
# dkimpy asks with bytes and wants bytes; authheaders' DMARC lookup asks with str and wants str.
def dnsfunc(name, timeout=5):
    as_bytes = isinstance(name, bytes)
    if as_bytes:
        name = name.decode()
    try:
        a = r.resolve(name.rstrip("."), "TXT")
    except Exception:
        return None
    txt = b"".join(b"".join(x.strings) for x in a)
    return txt if as_bytes else txt.decode()
req = json.load(sys.stdin)
out = []
for m in req:
    msg = base64.b64decode(m["message"])
    out.append(authheaders.authenticate_message(msg, "second.opinion", spf=True, dkim=True, dmarc=True,
        ip="127.0.0.1", mail_from=m["sender"], helo="mail.sender.com", dnsfunc=dnsfunc))
print(json.dumps(out))
`;

async function authheaders(port: number, msgs: { sender: string; message: Uint8Array }[]): Promise<string[]> {
  const child = new Deno.Command("/usr/bin/python3", {
    args: ["-c", AUTHHEADERS, String(port)],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(enc.encode(JSON.stringify(msgs.map((m) => ({ ...m, message: m.message.toBase64() })))));
  await w.close();
  const out = await child.output();
  assert.ok(out.success, dec.decode(out.stderr));
  return JSON.parse(dec.decode(out.stdout));
}

Deno.test("acceptance: a dkimpy-signed message with SPF and DMARC in unbound gets one A-R with spf, dkim, dmarc pass; a spoof is refused per p=reject", async () => {
  const dkimRecord = key.record.match(/.{1,200}/g)!.map((s) => `"${s}"`).join(" ");
  const unbound = await startUnbound({
    zones: [
      {
        name: "sender.com",
        records: [
          `@ IN TXT "v=spf1 ip4:127.0.0.1 -all"`,
          `${key.selector}._domainkey IN TXT ${dkimRecord}`,
          `_dmarc IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@sender.com"`,
          `mail IN A 127.0.0.1`,
        ].join("\n"),
      },
      { name: "evil.com", records: `@ IN TXT "v=spf1 ip4:127.0.0.1 -all"` },
      {
        // The parent, so the DMARC tree walk gets NXDOMAIN there as on the internet (not a dead root's SERVFAIL).
        // Real-suffix names: authheaders finds organisational domains in the Public Suffix List, where
        // ".test" is missing and sender.test and evil.test would look like one organisation.
        name: "com",
        records: "",
      },
    ],
  });
  const f = await startTestFerry({
    relay: { domains: ["example.test"], clients: [] },
    dns: { nameservers: [{ address: "127.0.0.1", port: unbound.port }] },
    checks: [spf(), dkim(), dmarc()],
  });
  try {
    const signed = await dkimpySign(enc.encode(message("Alice <alice@sender.com>")), [{ key }]);
    const good = await send(f.port, "alice@sender.com", signed);
    assert.equal(good.data?.code, 250, good.data?.text);
    const stored = dec.decode(await f.spool.readData(good.id!));
    const ar = stored.match(/^Authentication-Results:.*(\r\n[ \t].*)*/gm)!;
    assert.equal(ar.length, 1);
    assert.match(ar[0], /^Authentication-Results: ferry\.test;\r\n\tspf=pass /);
    assert.match(ar[0], /\r\n\tdkim=pass header\.d=sender\.com header\.s=sel header\.a=rsa-sha256/);
    assert.match(ar[0], /\r\n\tdmarc=pass .*header\.from=sender\.com/);
    const o = (await f.spool.get(good.id!))?.policy?.dmarc as DmarcOutcome;
    assert.equal(o.status, "accept");
    assert.equal(o.usedDomain, "sender.com");
    assert.equal(o.domainPolicy, "reject");

    // Spoofed: the envelope is the attacker's own (SPF pass for evil.com), the From is sender.com's.
    const spoof = enc.encode(message("CEO <ceo@sender.com>", "urgent wire transfer"));
    const bad = await send(f.port, "attacker@evil.com", spoof);
    assert.equal(bad.data?.code, 550, f.memlog.lines.map((l) => l.text).join("\n"));
    assert.equal(bad.data?.text, "5.7.1 Rejected by the DMARC policy of sender.com");
    assert.ok(f.memlog.has(/DMARC reject for sender\.com/));
    assert.equal(await f.spool.count(), 1);

    // python3-authheaders, given the same messages and DNS, sees the same results.
    const [theirsGood, theirsBad] = await authheaders(unbound.port, [
      { sender: "alice@sender.com", message: signed },
      { sender: "attacker@evil.com", message: spoof },
    ]);
    console.log(
      `Ferry:       ${ar[0].replace(/\r\n\t/g, " ")}\nauthheaders: ${theirsGood}\nspoof:       ${theirsBad}`,
    );
    assert.match(theirsGood, /spf=pass/);
    assert.match(theirsGood, /dkim=pass/);
    assert.match(theirsGood, /dmarc=pass/);
    assert.match(theirsBad, /dmarc=fail/);
  } finally {
    await f.stop();
    await unbound.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("DMARC with unbound serving only the sender's zone (no root, as the DNSSEC recipe's setup): a subdomain gets sp, not temperror", async () => {
  const unbound = await startUnbound({
    zones: [{ name: "sender.test", records: `_dmarc IN TXT "v=DMARC1; p=none; sp=reject"` }],
  });
  const f = await startTestFerry({
    relay: { domains: ["example.test"], clients: [] },
    dns: { nameservers: [{ address: "127.0.0.1", port: unbound.port }], timeout: "1s" },
    checks: [spf(), dkim(), dmarc()],
  });
  try {
    // _dmarc.test gets no answer (the root is a dead port); news.sender.test falls under sender.test's sp.
    for (let i = 0; i < 2; i++) {
      const r = await send(
        f.port,
        "alice@news.sender.test",
        enc.encode(message("Alice <alice@news.sender.test>")),
      );
      assert.equal(r.data?.code, 550, f.memlog.lines.map((l) => l.text).join("\n"));
      assert.equal(r.data?.text, "5.7.1 Rejected by the DMARC policy of news.sender.test");
    }
    assert.equal(await f.spool.count(), 0);
  } finally {
    await f.stop();
    await unbound.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});

/** Evaluates DMARC for a From domain with SPF passing for `spfDomain` and DKIM passing for `dkimDomain`. */
async function judge(
  r: MemoryResolver,
  from: string,
  opts: { spfDomain?: string; dkimDomain?: string; random?: () => number } = {},
): Promise<DmarcOutcome> {
  const sig = (d: string) => ({
    result: "pass",
    domain: d,
    selector: "s",
    algorithm: "rsa-sha256",
    b: "",
    authResult: "",
  });
  return await evaluateDmarc(
    {
      headerFrom: [`x@${from}`],
      fromFields: 1,
      spf: opts.spfDomain ? { result: "pass", domain: opts.spfDomain, identity: "mailfrom" } : undefined,
      dkim: {
        signatures: opts.dkimDomain ? [sig(opts.dkimDomain)] : [],
        headerFrom: [`x@${from}`],
        fromFields: 1,
      },
    },
    mailauthResolver(r),
    opts.random,
  );
}

Deno.test("evaluateDmarc(): alignment relaxed and strict, p and sp, pct sampling, and Exim's status names", async () => {
  const r = new MemoryResolver({
    records: {
      "_dmarc.relaxed.test": { TXT: ["v=DMARC1; p=reject"] },
      "_dmarc.strict.test": { TXT: ["v=DMARC1; p=quarantine; adkim=s; aspf=s"] },
      "_dmarc.sub.test": { TXT: ["v=DMARC1; p=none; sp=reject"] },
      "a.sub.test": { A: ["192.0.2.1"] },
      "_dmarc.half.test": { TXT: ["v=DMARC1; p=reject; pct=50"] },
    },
  });
  r.fail("_dmarc.slow.test", "TXT", "TIMEOUT");
  // Relaxed: a signature from a subdomain aligns; SPF of an unrelated domain does not.
  assert.equal((await judge(r, "relaxed.test", { dkimDomain: "mail.relaxed.test" })).status, "accept");
  const unaligned = await judge(r, "relaxed.test", { spfDomain: "other.test" });
  assert.deepEqual([unaligned.status, unaligned.result, unaligned.domainPolicy], [
    "reject",
    "fail",
    "reject",
  ]);
  // Strict: the subdomain no longer aligns; the exact domain does.
  assert.equal((await judge(r, "strict.test", { dkimDomain: "mail.strict.test" })).status, "quarantine");
  assert.equal((await judge(r, "strict.test", { spfDomain: "strict.test" })).status, "accept");
  // sp applies to subdomains, p to the domain itself.
  const sub = await judge(r, "a.sub.test");
  assert.deepEqual([sub.status, sub.usedDomain, sub.domainPolicy], ["reject", "sub.test", "reject"]);
  assert.equal((await judge(r, "sub.test")).status, "none");
  // pct=50: inside the sample the policy applies, outside it is weakened one step (RFC 7489 6.6.4).
  assert.equal((await judge(r, "half.test", { random: () => 0.2 })).status, "reject");
  const out = await judge(r, "half.test", { random: () => 0.7 });
  assert.deepEqual([out.status, out.sampledOut], ["quarantine", true]);
  assert.match(out.statusText, /weakened by pct=50/);
  assert.equal((await judge(r, "norecord.test")).status, "norecord");
  assert.equal((await judge(r, "slow.test")).status, "temperror");
  const nofrom = await evaluateDmarc(
    { headerFrom: [], fromFields: 0, dkim: { signatures: [], headerFrom: [], fromFields: 0 } },
    mailauthResolver(r),
  );
  assert.equal(nofrom.status, "nofrom");
});

Deno.test("evaluateDmarc(): a top-level domain whose DMARC record cannot be looked up counts as having none (RFC 7489 never asks it)", async () => {
  // A resolver that cannot reach the root, as unbound serving only its own zones: _dmarc.test is SERVFAIL.
  const r = new MemoryResolver({
    records: {
      "_dmarc.example.test": { TXT: ["v=DMARC1; p=reject; sp=quarantine"] },
      "sub.example.test": { A: ["192.0.2.1"] },
    },
  });
  r.fail("_dmarc.test", "TXT", "SERVFAIL");
  // A subdomain gets the organisational domain's sp, not a temperror.
  const sub = await judge(r, "sub.example.test");
  assert.deepEqual([sub.status, sub.result, sub.usedDomain], ["quarantine", "fail", "example.test"]);
  assert.equal((await judge(r, "sub.example.test", { dkimDomain: "example.test" })).status, "accept");
  // A signature from another domain under the same TLD does not align: fail per p=reject, not temperror.
  const other = await judge(r, "example.test", { dkimDomain: "other.test" });
  assert.deepEqual([other.status, other.result], ["reject", "fail"]);
  // Any other name that fails is still a temperror.
  r.fail("_dmarc.broken.example.test", "TXT", "SERVFAIL");
  assert.equal((await judge(r, "broken.example.test")).status, "temperror");
});

Deno.test("evaluateDmarc(): for the null sender the SPF result of postmaster@HELO (RFC 7208 2.4) aligns as the MAIL FROM identity", async () => {
  const r = new MemoryResolver({ records: { "_dmarc.bounces.test": { TXT: ["v=DMARC1; p=reject"] } } });
  const judged = (identity: "mailfrom" | "helo", domain: string) =>
    evaluateDmarc(
      {
        headerFrom: ["mailer-daemon@bounces.test"],
        fromFields: 1,
        spf: { result: "pass", domain, identity },
        dkim: { signatures: [], headerFrom: ["mailer-daemon@bounces.test"], fromFields: 1 },
      },
      mailauthResolver(r),
    );
  // An unsigned bounce from a host whose HELO name passes SPF in the From domain: aligned, accepted.
  const bounce = await judged("helo", "mx1.bounces.test");
  assert.deepEqual([bounce.status, bounce.result, bounce.alignedSpf], ["accept", "pass", "mx1.bounces.test"]);
  // A HELO name outside the From domain still does not align.
  assert.equal((await judged("helo", "elsewhere.test")).status, "reject");
});

Deno.test("dmarc(): dmarcDisableVerify skips it; p=quarantine puts the message on hold; temperror is 451", async () => {
  const r = new MemoryResolver({
    records: {
      "_dmarc.q.test": { TXT: ["v=DMARC1; p=quarantine"] },
      "_dmarc.r.test": { TXT: ["v=DMARC1; p=reject"] },
    },
  });
  r.fail("_dmarc.slow.test", "TXT", "TIMEOUT");
  const f = await startTestFerry({
    checks: [dkim(), dmarc()],
    policy: {
      mail: [async (c, next) => {
        if (c.sender.startsWith("trusted@")) c.set("dmarcDisableVerify", true);
        await next();
      }],
    },
  }, { resolver: r });
  try {
    const q = await send(f.port, "x@q.test", enc.encode(message("x@q.test")));
    assert.equal(q.data?.code, 250);
    assert.equal(((await f.spool.get(q.id!))?.policy?.dmarc as DmarcOutcome).status, "quarantine");
    assert.equal((await f.spool.row(q.id!))?.state, "hold");
    const rejected = await send(f.port, "x@r.test", enc.encode(message("x@r.test")));
    assert.equal(rejected.data?.code, 550);
    // A DNS timeout on the DMARC record is a 451, never a 5xx.
    const slow = await send(f.port, "x@slow.test", enc.encode(message("x@slow.test")));
    assert.equal(slow.data?.code, 451);
    assert.match(slow.data!.text, /^4\.7\.1 /);
    const trusted = await send(f.port, "trusted@r.test", enc.encode(message("x@r.test")));
    assert.equal(trusted.data?.code, 250);
    assert.equal((await f.spool.get(trusted.id!))?.policy?.dmarc, undefined);
    assert.ok(f.memlog.has("DMARC verification disabled for this message"));
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
  // verifyDkim is what dmarc() falls back on without dkim(): an unsigned message has no signatures.
  assert.deepEqual((await verifyDkim(enc.encode(message("a@b.test")), mailauthResolver(r))).signatures, []);
});
