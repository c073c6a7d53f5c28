import assert from "node:assert/strict";
import { SmtpError } from "../../src/core/reply.ts";
import {
  checkDomain,
  formatMailbox,
  parseCommand,
  parseMailbox,
  parseParams,
  parsePathArg,
} from "../../src/smtp/command.ts";

/** Asserts that `fn` throws an SmtpError with this code and enhanced code. */
function throwsSmtp(fn: () => unknown, code: number, enhanced: string, label = ""): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SmtpError, `${label}: expected SmtpError, got ${e}`);
    assert.equal(e.code, code, `${label}: ${e.message}`);
    assert.equal(e.enhanced, enhanced, `${label}: ${e.message}`);
    return true;
  });
}

Deno.test("parseCommand() upper-cases the verb and trims the argument", () => {
  assert.deepEqual(parseCommand("mail FROM:<a@b.test>"), { verb: "MAIL", arg: "FROM:<a@b.test>" });
  assert.deepEqual(parseCommand("QUIT"), { verb: "QUIT", arg: "" });
  assert.deepEqual(parseCommand("noop  "), { verb: "NOOP", arg: "" });
  assert.deepEqual(parseCommand("EHLO   client.test  "), { verb: "EHLO", arg: "client.test" });
  assert.deepEqual(parseCommand(""), { verb: "", arg: "" });
  assert.equal(parseCommand("X-1 junk").verb, "X-1");
  assert.equal(parseCommand("\x00\x01").arg, "");
});

Deno.test("parsePathArg() reads the null reverse path", () => {
  const p = parsePathArg("FROM:<>", "MAIL");
  assert.equal(p.address, "");
  assert.equal(p.mailbox, undefined);
  assert.equal(p.sourceRoute, false);
  assert.equal(p.params.size, 0);
  assert.equal(parsePathArg("from: <> SIZE=10", "MAIL").params.get("SIZE"), "10");
  throwsSmtp(() => parsePathArg("TO:<>", "RCPT"), 501, "5.1.7", "empty forward path");
});

Deno.test("parsePathArg() reads a plain mailbox and keeps its case", () => {
  const p = parsePathArg("TO:<User.Name+tag@Example.TEST>", "RCPT");
  assert.equal(p.address, "User.Name+tag@Example.TEST");
  assert.deepEqual(p.mailbox, { local: "User.Name+tag", domain: "Example.TEST" });
  assert.equal(parsePathArg("to:<a@b.test>", "RCPT").address, "a@b.test");
  assert.equal(parsePathArg("TO:  <a@b.test>", "RCPT").address, "a@b.test");
});

Deno.test("parsePathArg() reads quoted local parts with escapes", () => {
  const p = parsePathArg('FROM:<"john \\"jr\\" doe"@example.test>', "MAIL");
  assert.equal(p.mailbox!.local, 'john "jr" doe');
  assert.equal(p.address, '"john \\"jr\\" doe"@example.test');
  const gt = parsePathArg('TO:<"a>b"@example.test> NOTIFY=NEVER', "RCPT");
  assert.equal(gt.mailbox!.local, "a>b");
  assert.equal(gt.params.get("NOTIFY"), "NEVER");
  const at = parsePathArg('TO:<"user@evil.test"@example.test>', "RCPT");
  assert.deepEqual(at.mailbox, { local: "user@evil.test", domain: "example.test" });
  // A quoted local part that is a plain dot-atom renders without quotes.
  assert.equal(parsePathArg('TO:<"plain"@example.test>', "RCPT").address, "plain@example.test");
  assert.equal(parsePathArg('TO:<"a\\\\b"@x.test>', "RCPT").mailbox!.local, "a\\b");
});

Deno.test("parsePathArg() refuses broken quoted local parts", () => {
  for (
    const bad of [
      'TO:<"unterminated@example.test>',
      'TO:<"a"b@example.test>',
      'TO:<"a">',
      'TO:<"tab\there"@example.test>',
      'TO:<"ctl\x01"@example.test>',
      'TO:<"a\\\x01"@example.test>',
    ]
  ) {
    assert.throws(() => parsePathArg(bad, "RCPT"), SmtpError, bad);
  }
});

Deno.test("parsePathArg() strips a source route and says so", () => {
  const p = parsePathArg("TO:<@a.test,@b.test:user@c.test>", "RCPT");
  assert.equal(p.address, "user@c.test");
  assert.equal(p.sourceRoute, true);
  assert.deepEqual(p.mailbox, { local: "user", domain: "c.test" });
  assert.equal(parsePathArg("FROM:<@relay.test:u@d.test>", "MAIL").address, "u@d.test");
  for (
    const bad of ["TO:<@a.test>", "TO:<@:u@c.test>", "TO:<@a.test,b.test:u@c.test>", "TO:<@bad_!:u@c.test>"]
  ) {
    throwsSmtp(() => parsePathArg(bad, "RCPT"), 501, "5.1.7", bad);
  }
  throwsSmtp(() => parsePathArg("FROM:<@a.test:>", "MAIL"), 501, "5.1.7", "route to null");
});

Deno.test("parsePathArg() accepts IPv4 and IPv6 address literals", () => {
  assert.deepEqual(parsePathArg("TO:<user@[192.0.2.1]>", "RCPT").mailbox, {
    local: "user",
    domain: "[192.0.2.1]",
  });
  assert.equal(parsePathArg("TO:<u@[IPv6:2001:db8::1]>", "RCPT").mailbox!.domain, "[IPv6:2001:db8::1]");
  assert.equal(parsePathArg("TO:<u@[ipv6:::1]>", "RCPT").mailbox!.domain, "[ipv6:::1]");
});

Deno.test("parsePathArg() refuses bad address literals", () => {
  for (
    const bad of [
      "u@[192.0.2.256]",
      "u@[192.0.2]",
      "u@[1.2.3.4",
      "u@[]",
      "u@[IPv6:1.2.3.4]",
      "u@[IPv6:2001:db8::g]",
      "u@[2001:db8::1]",
      "u@[IPv4:1.2.3.4]",
      "u@[01.2.3.4]",
      "u@[x-tag:stuff]",
    ]
  ) {
    throwsSmtp(() => parsePathArg(`TO:<${bad}>`, "RCPT"), 501, "5.1.7", bad);
  }
});

Deno.test("parsePathArg() accepts one trailing dot on a domain, not an empty label", () => {
  assert.equal(parsePathArg("TO:<user@example.test.>", "RCPT").mailbox!.domain, "example.test.");
  for (
    const bad of ["u@example..test", "u@.example.test", "u@example.test..", "u@.", "u@-x.test", "u@x-.test"]
  ) {
    throwsSmtp(() => parsePathArg(`TO:<${bad}>`, "RCPT"), 501, "5.1.7", bad);
  }
});

Deno.test("parsePathArg() wants angle brackets and the right prefix", () => {
  throwsSmtp(() => parsePathArg("TO:user@example.test", "RCPT"), 501, "5.5.4", "no brackets");
  throwsSmtp(() => parsePathArg("FROM:user@example.test", "MAIL"), 501, "5.5.4", "no brackets");
  throwsSmtp(() => parsePathArg("TO:<user@example.test", "RCPT"), 501, "5.5.4", "no closing");
  throwsSmtp(() => parsePathArg("FROM:<a@b.test>", "RCPT"), 501, "5.5.4", "MAIL prefix on RCPT");
  throwsSmtp(() => parsePathArg("TO:<a@b.test>", "MAIL"), 501, "5.5.4", "RCPT prefix on MAIL");
  throwsSmtp(() => parsePathArg("FROM <a@b.test>", "MAIL"), 501, "5.5.4", "no colon");
  throwsSmtp(() => parsePathArg("", "MAIL"), 501, "5.5.4", "empty");
});

Deno.test("parsePathArg() refuses bad local parts and missing domains", () => {
  for (
    const bad of [
      "user",
      "@example.test",
      "a..b@x.test",
      ".a@x.test",
      "a.@x.test",
      "a b@x.test",
      "a@b@x.test",
      "a(b)@x.test",
      "user@",
    ]
  ) {
    assert.throws(() => parsePathArg(`TO:<${bad}>`, "RCPT"), SmtpError, bad);
  }
});

Deno.test("parsePathArg() enforces local part and path length limits", () => {
  const local64 = "a".repeat(64);
  assert.equal(parsePathArg(`TO:<${local64}@x.test>`, "RCPT").mailbox!.local, local64);
  throwsSmtp(() => parsePathArg(`TO:<${"a".repeat(65)}@x.test>`, "RCPT"), 501, "5.1.3", "local 65");
  throwsSmtp(() => parsePathArg(`TO:<"${"a".repeat(65)}"@x.test>`, "RCPT"), 501, "5.1.3", "quoted local 65");
  const longDomain = Array.from({ length: 5 }, () => "d".repeat(60)).join(".");
  throwsSmtp(() => parsePathArg(`TO:<u@${longDomain}>`, "RCPT"), 501, "5.1.3", "path > 256");
  throwsSmtp(() => parsePathArg(`TO:<u@${"l".repeat(64)}.test>`, "RCPT"), 501, "5.1.7", "label 64");
});

Deno.test("parsePathArg() wants SMTPUTF8 for non-ASCII addresses (553 5.6.7)", () => {
  throwsSmtp(() => parsePathArg("FROM:<jörg@example.test>", "MAIL", false), 553, "5.6.7", "local");
  throwsSmtp(() => parsePathArg("TO:<user@bücher.example>", "RCPT", false), 553, "5.6.7", "domain");
  throwsSmtp(() => parsePathArg('TO:<"jö rg"@example.test>', "RCPT", false), 553, "5.6.7", "quoted local");
  assert.equal(
    parsePathArg("FROM:<jörg@bücher.example> SMTPUTF8", "MAIL", false).address,
    "jörg@bücher.example",
  );
  assert.equal(parsePathArg("TO:<jörg@bücher.example>", "RCPT", true).mailbox!.local, "jörg");
});

Deno.test("parsePathArg() accepts RCPT TO:<postmaster> without a domain, in any case", () => {
  const p = parsePathArg("TO:<postmaster>", "RCPT");
  assert.equal(p.address, "postmaster");
  assert.deepEqual(p.mailbox, { local: "postmaster", domain: "" });
  assert.equal(parsePathArg("TO:<PostMaster>", "RCPT").address, "postmaster");
  assert.equal(parsePathArg("TO:<postmaster@example.test>", "RCPT").address, "postmaster@example.test");
  assert.throws(() => parsePathArg("FROM:<postmaster>", "MAIL"), SmtpError);
  assert.throws(() => parsePathArg("TO:<abuse>", "RCPT"), SmtpError);
});

Deno.test("parsePathArg() reads parameters after the path", () => {
  const p = parsePathArg("FROM:<a@b.test> size=1000 BODY=8BITMIME  SMTPUTF8", "MAIL");
  assert.deepEqual([...p.params], [["SIZE", "1000"], ["BODY", "8BITMIME"], ["SMTPUTF8", undefined]]);
  throwsSmtp(() => parsePathArg("FROM:<a@b.test>SIZE=10", "MAIL"), 501, "5.5.4", "no space");
  throwsSmtp(() => parsePathArg("FROM:<a@b.test> SIZE=1 size=2", "MAIL"), 501, "5.5.4", "duplicate");
});

Deno.test("parseParams() reads keywords and values, refusing malformed ones", () => {
  assert.equal(parseParams("").size, 0);
  assert.equal(parseParams("   ").size, 0);
  assert.deepEqual([...parseParams(" RET=HDRS ENVID=abc+2B")], [["RET", "HDRS"], ["ENVID", "abc+2B"]]);
  assert.deepEqual([...parseParams(" x-custom=1")], [["X-CUSTOM", "1"]]);
  for (
    const bad of [" SIZE=", " =1", " -X=1", " SI_ZE=1", " A=b=c", " KEY=a\x01", " NOTIFY=NEVER notify=NEVER"]
  ) {
    throwsSmtp(() => parseParams(bad), 501, "5.5.4", JSON.stringify(bad));
  }
});

Deno.test("checkDomain() accepts names and literals, explaining what is wrong otherwise", () => {
  assert.equal(checkDomain("example.test"), undefined);
  assert.equal(checkDomain("xn--bcher-kva.example"), undefined);
  assert.equal(checkDomain("[127.0.0.1]"), undefined);
  assert.equal(checkDomain("[IPv6:::1]"), undefined);
  assert.equal(checkDomain(""), "empty domain");
  assert.equal(
    checkDomain("a".repeat(63) + "." + "b".repeat(63) + "." + "c".repeat(63) + "." + "d".repeat(63) + ".e"),
    "domain too long",
  );
  assert.equal(checkDomain("[IPv6:1.2.3.4]"), "bad IPv6 literal");
  assert.equal(checkDomain("[1.2.3.4"), "bad address literal");
  assert.equal(checkDomain("a_b.test"), "bad domain");
});

Deno.test("parseMailbox() and formatMailbox() round-trip, quoting only when needed", () => {
  for (const local of ["plain", "with space", 'q"uote', "back\\slash", "a..b", ".lead", "x@y"]) {
    const text = formatMailbox({ local, domain: "example.test" });
    assert.deepEqual(parseMailbox(text, false), { local, domain: "example.test" }, text);
  }
  assert.equal(formatMailbox({ local: "a.b", domain: "x.test" }), "a.b@x.test");
  assert.equal(formatMailbox({ local: "a b", domain: "x.test" }), '"a b"@x.test');
});
