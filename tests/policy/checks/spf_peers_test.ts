/**
 * spf() inside a running Ferry, against a real resolver (unbound serving test zones), with pyspf (Debian's
 * python3-spf under /usr/bin/python3, pointed at the same unbound) as the second opinion: both must give the
 * same result for every case. Also the SMTP side: Received-SPF in the stored message, the result in
 * envelope.policy, `fail` refused with 550 5.7.23, a DNS timeout answered 451 4.7.24 (never 5xx).
 */

import assert from "node:assert/strict";
import { startUnbound } from "../../helpers/unbound.ts";
import { RawClient, startTestFerry } from "../../helpers/ferry.ts";
import { spf, type SpfOutcome } from "../../../src/policy/checks/spf.ts";
import { MemoryResolver } from "../../../src/dns/memory_resolver.ts";

const dec = new TextDecoder();

const ZONE = [
  `pass IN TXT "v=spf1 ip4:127.0.0.1 -all"`,
  `fail IN TXT "v=spf1 ip4:192.0.2.1 -all"`,
  `soft IN TXT "v=spf1 ip4:192.0.2.1 ~all"`,
  `neutral IN TXT "v=spf1 ?all"`,
  `nospf IN TXT "not an spf record"`,
  `perm IN TXT "v=spf1 ip4:300.1.1.1 -all"`,
  `two IN TXT "v=spf1 -all"`,
  `two IN TXT "v=spf1 +all"`,
  `inc IN TXT "v=spf1 include:pass.spf.test -all"`,
  `redir IN TXT "v=spf1 redirect=fail.spf.test"`,
  `mx IN TXT "v=spf1 mx/24 -all"`,
  `mx IN MX 10 mail.spf.test.`,
  `mail IN A 127.0.0.9`,
  `a IN TXT "v=spf1 a -all"`,
  `a IN A 127.0.0.1`,
  `many IN TXT "v=spf1 a:h1.spf.test a:h2.spf.test a:h3.spf.test a:h4.spf.test a:h5.spf.test ` +
  `a:h6.spf.test a:h7.spf.test a:h8.spf.test a:h9.spf.test a:h10.spf.test a:h11.spf.test ip4:127.0.0.1 -all"`,
  ...Array.from({ length: 11 }, (_, i) => `h${i + 1} IN A 192.0.2.${i + 1}`),
  `void IN TXT "v=spf1 a:v1.spf.test a:v2.spf.test a:v3.spf.test ip4:127.0.0.1 -all"`,
  `macro IN TXT "v=spf1 exists:%{i}.ex.%{d} -all"`,
  `127.0.0.1.ex.macro IN A 127.0.0.2`,
  `helo IN TXT "v=spf1 ip4:127.0.0.1 -all"`,
  `split IN TXT "v=spf1 ip4:192.0.2.0/24 " "ip4:127.0.0.0/8 -all"`,
].join("\n");

/** [sender, helo] pairs; the client is always 127.0.0.1. */
const CASES: [string, string][] = [
  ["a@pass.spf.test", "client.spf.test"],
  ["a@fail.spf.test", "client.spf.test"],
  ["a@soft.spf.test", "client.spf.test"],
  ["a@neutral.spf.test", "client.spf.test"],
  ["a@nospf.spf.test", "client.spf.test"],
  ["a@absent.spf.test", "client.spf.test"],
  ["a@perm.spf.test", "client.spf.test"],
  ["a@two.spf.test", "client.spf.test"],
  ["a@inc.spf.test", "client.spf.test"],
  ["a@redir.spf.test", "client.spf.test"],
  ["a@mx.spf.test", "client.spf.test"],
  ["a@a.spf.test", "client.spf.test"],
  ["a@many.spf.test", "client.spf.test"],
  ["a@void.spf.test", "client.spf.test"],
  ["a@macro.spf.test", "client.spf.test"],
  ["a@split.spf.test", "client.spf.test"],
  ["", "helo.spf.test"],
  ["", "fail.spf.test"],
];

const PYSPF = `
import json, sys
import dns.resolver, spf
r = dns.resolver.Resolver(configure=False)
r.nameservers = ["127.0.0.1"]
r.port = int(sys.argv[1])
dns.resolver.default_resolver = r
out = []
for sender, helo in json.load(sys.stdin):
    res, text = spf.check2(i="127.0.0.1", s=sender, h=helo)
    out.append(res)
print(json.dumps(out))
`;

async function pyspf(port: number): Promise<string[]> {
  const child = new Deno.Command("/usr/bin/python3", {
    args: ["-c", PYSPF, String(port)],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(JSON.stringify(CASES)));
  await w.close();
  const out = await child.output();
  assert.ok(out.success, dec.decode(out.stderr));
  return JSON.parse(dec.decode(out.stdout));
}

/** Sends one message through Ferry; returns the reply codes and, when stored, the id. */
async function sendOne(port: number, sender: string, helo: string) {
  const c = await RawClient.connect(port);
  try {
    await c.reply();
    await c.cmd(`EHLO ${helo}`);
    const mail = await c.cmd(`MAIL FROM:<${sender}>`);
    if (mail?.code !== 250) return { mail };
    await c.cmd("RCPT TO:<r@example.test>");
    await c.cmd("DATA");
    const data = await c.cmd("Subject: spf\r\n\r\nbody\r\n.");
    return { mail, data, id: /id=(\S+)/.exec(data?.text ?? "")?.[1] };
  } finally {
    c.close();
  }
}

Deno.test("spf() in Ferry agrees with pyspf on every case served by unbound; Received-SPF and A-R are added", async () => {
  const unbound = await startUnbound({ zones: [{ name: "spf.test", records: ZONE }] });
  const f = await startTestFerry({
    relay: { domains: ["example.test"], clients: [] },
    dns: { nameservers: [{ address: "127.0.0.1", port: unbound.port }] },
    checks: [spf({ actions: { fail: "accept", temperror: "accept" } })],
  });
  try {
    const ours: string[] = [];
    for (const [sender, helo] of CASES) {
      const r = await sendOne(f.port, sender, helo);
      assert.equal(r.data?.code, 250, `${sender} ${helo}`);
      const env = await f.spool.get(r.id!);
      const o = env?.policy?.spf as SpfOutcome;
      ours.push(o.result);
      const stored = dec.decode(await f.spool.readData(r.id!));
      assert.match(stored, new RegExp(`\r\nReceived-SPF: ${o.result} `));
      assert.match(stored, new RegExp(`\r\nAuthentication-Results: ferry\\.test;\r\n\tspf=${o.result} `));
      if (!sender) assert.equal(o.domain, helo, "the null sender is checked as postmaster@HELO");
    }
    const theirs = await pyspf(unbound.port);
    const table = CASES.map(([s, h], i) => `${s || `<> helo ${h}`}: ferry ${ours[i]}, pyspf ${theirs[i]}`);
    console.log(table.join("\n"));
    assert.deepEqual(ours, theirs);
    // The cases cover every result that DNS data can produce here.
    for (const r of ["pass", "fail", "softfail", "neutral", "none", "permerror"]) {
      assert.ok(ours.includes(r), r);
    }
  } finally {
    await f.stop();
    await unbound.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("spf() defaults: fail is refused with 550 5.7.23 and the domain's reason; a DNS timeout gets 451 4.7.24", async () => {
  const resolver = new MemoryResolver({
    records: {
      "fail.test": { TXT: ["v=spf1 -all exp=why.fail.test"] },
      "why.fail.test": { TXT: ["%{i} is not one of %{d}'s servers"] },
      "ok.test": { TXT: ["v=spf1 +all"] },
    },
  });
  resolver.fail("slow.test", "TXT", "TIMEOUT");
  const f = await startTestFerry({ checks: [spf()] }, { resolver });
  try {
    const fail = await sendOne(f.port, "x@fail.test", "h.test");
    assert.equal(fail.mail?.code, 550);
    assert.equal(fail.mail?.text, "5.7.23 SPF check failed: 127.0.0.1 is not one of fail.test's servers");
    const slow = await sendOne(f.port, "x@slow.test", "h.test");
    assert.equal(slow.mail?.code, 451);
    assert.match(slow.mail!.text, /^4\.7\.24 SPF temperror/);
    // The server keeps serving.
    const ok = await sendOne(f.port, "x@ok.test", "h.test");
    assert.equal(ok.data?.code, 250);
    assert.ok(f.memlog.has(/check spf rejected: SPF check failed/));
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("spf({ guess: true }): a domain without a record is guessed from a/24 mx/24, labelled X-SPF-Guess, never spf=pass", async () => {
  const resolver = new MemoryResolver({
    records: {
      "norecord.test": { A: ["127.0.0.77"] },
      "hasrecord.test": { TXT: ["v=spf1 -all"] },
    },
  });
  const f = await startTestFerry({ checks: [spf({ guess: true, actions: { fail: "accept" } })] }, {
    resolver,
  });
  try {
    const g = await sendOne(f.port, "x@norecord.test", "h.test");
    const env = await f.spool.get(g.id!);
    const o = env?.policy?.spf as SpfOutcome;
    assert.equal(o.result, "pass");
    assert.equal(o.guessed, true);
    const stored = dec.decode(await f.spool.readData(g.id!));
    assert.match(stored, /\r\nX-SPF-Guess: pass /);
    assert.doesNotMatch(stored, /Received-SPF|spf=pass/);
    assert.match(stored, /spf=none \(guess: pass\) smtp\.mailfrom=norecord\.test/);
    // A published record is never replaced by the guess.
    const r = await sendOne(f.port, "x@hasrecord.test", "h.test");
    const o2 = (await f.spool.get(r.id!))?.policy?.spf as SpfOutcome;
    assert.deepEqual([o2.result, o2.guessed], ["fail", false]);
  } finally {
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});
