/**
 * SMTP AUTH (RFC 4954, 4616) end to end: swaks and Python's smtplib against plain, STARTTLS and smtps listeners,
 * the submission role, every refusal reply, failure limits, sender binding, and Ferry authenticating to a
 * second Ferry's submission listener as its smarthost.
 */

import assert from "node:assert/strict";
import { startTestFerry, type TestFerry } from "../helpers/ferry.ts";
import { createPki, ferryTls, type TestPki } from "../helpers/pki.ts";
import { runPython, runSwaks, spoolIdIn, swaksAuthArgs } from "../helpers/peers.ts";
import { waitFor } from "../helpers/downstream.ts";
import { hashPassword } from "../../src/core/password_hash.ts";
import { loadOpenSsl } from "../../src/tls/mod.ts";
import type { FerryConfig } from "../../mod.ts";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";

loadOpenSsl();

const dec = new TextDecoder();
// A cheap cost keeps the tests fast; the format and comparison are those of real hashes.
const ALICE = await hashPassword("alice-secret", { n: 1024 });
const BOB = await hashPassword("bob-secret", { n: 1024 });

interface Rig {
  f: TestFerry;
  pki: TestPki;
  /** plain (STARTTLS), submission (STARTTLS, AUTH required), smtps */
  ports: { plain: number; submission: number; smtps: number };
  stop(): Promise<void>;
}

async function rig(extra: FerryConfig = {}): Promise<Rig> {
  const pki = await createPki();
  const cert = await pki.issue({ cn: "ferry.test", dns: ["ferry.test"] });
  const f = await startTestFerry({
    listen: [
      { address: "127.0.0.1", port: 0 },
      { address: "127.0.0.1", port: 0, submission: true },
      { address: "127.0.0.1", port: 0, mode: "smtps" },
    ],
    relay: { domains: ["example.test"], clients: [] },
    tls: ferryTls(cert),
    ...extra,
    auth: { users: { alice: ALICE, bob: BOB }, ...extra.auth },
  });
  const [plain, submission, smtps] = f.addresses.map((a) => a.port);
  return {
    f,
    pki,
    ports: { plain, submission, smtps },
    async stop() {
      await f.stop();
      await pki.cleanup();
      await Deno.remove(f.dir, { recursive: true }).catch(() => {});
    },
  };
}

/** A raw SMTP dialogue over TLS in Python: `steps` are lines to send; prints each reply as one line. */
const RAW = `
import socket, ssl, sys, json
port, mode, steps = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = socket.create_connection(("127.0.0.1", port), timeout=5)
if mode == "smtps": s = ctx.wrap_socket(s)
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        l = f.readline().decode()
        if not l: return "EOF"
        lines.append(l.rstrip("\\r\\n"))
        if l[3:4] != "-": return " | ".join(lines)
def say(line):
    s.sendall((line + "\\r\\n").encode())
print("greeting", reply())
say("EHLO raw.test"); print("ehlo", reply())
if mode == "starttls":
    say("STARTTLS"); reply()
    s = ctx.wrap_socket(s); f = s.makefile("rb")
    say("EHLO raw.test"); print("ehlo-tls", reply())
for step in steps:
    say(step); print(">", step.split(" ")[0] if step.startswith(("AUTH", "MAIL", "RCPT")) else "line", reply())
`;

async function raw(port: number, mode: "plain" | "starttls" | "smtps", steps: string[]): Promise<string[]> {
  const r = await runPython(RAW, [String(port), mode, JSON.stringify(steps)]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  return r.stdout.trimEnd().split("\n");
}

const b64 = (s: string) => new TextEncoder().encode(s).toBase64();
const plainResp = (user: string, password: string, authzid = "") => b64(`${authzid}\0${user}\0${password}`);

Deno.test("swaks --auth PLAIN is refused before TLS and relays after STARTTLS; log, Received: and envelope say who", async () => {
  const r = await rig();
  try {
    const before = await runSwaks(
      r.ports.plain,
      swaksAuthArgs({
        from: "alice@corp.test",
        to: "someone@elsewhere.test",
        mechanism: "PLAIN",
        user: "alice",
        password: "alice-secret",
      }),
    );
    assert.notEqual(before.code, 0);
    assert.doesNotMatch(before.stdout, /250-AUTH/);
    assert.match(before.stdout + before.stderr, /not supported|not advertised|AUTH/i);

    const after = await runSwaks(
      r.ports.plain,
      swaksAuthArgs({
        tls: "starttls",
        from: "alice@corp.test",
        to: "someone@elsewhere.test",
        mechanism: "PLAIN",
        user: "alice",
        password: "alice-secret",
      }),
    );
    assert.equal(after.code, 0, after.stdout + after.stderr);
    assert.match(after.stdout, /<~ {2}250-AUTH PLAIN LOGIN/);
    assert.match(after.stdout, /<~ {2}235 2\.7\.0 Authentication successful/);
    const id = spoolIdIn(after.stdout);
    assert.ok(id, after.stdout);
    const env = await r.f.spool.get(id);
    assert.deepEqual(env?.auth, { mechanism: "PLAIN", user: "alice" });
    assert.equal(env?.protocol, "esmtpsa");
    const data = dec.decode(await r.f.spool.readData(id));
    assert.match(data, /with ESMTPSA \(TLS1\.[23]:/);
    const line = r.f.memlog.lines.find((l) => l.text.startsWith("<= alice@corp.test"))!.text;
    assert.match(line, / P=esmtpsa A=plain:alice X=TLS1\.[23]/);

    // Without AUTH the same foreign recipient is refused: the relay permission came from the login.
    const anon = await runSwaks(r.ports.plain, [
      "--tls",
      "--from",
      "a@corp.test",
      "--to",
      "x@elsewhere.test",
    ]);
    assert.match(anon.stdout, /<~?\*\*? +550 5\.7\.1 Relay access denied/);
  } finally {
    await r.stop();
  }
});

Deno.test("swaks --auth LOGIN over smtps and on the submission listener; submission without AUTH gets 530 5.7.0", async () => {
  const r = await rig();
  try {
    const smtps = await runSwaks(
      r.ports.smtps,
      swaksAuthArgs({
        tls: "smtps",
        from: "bob@corp.test",
        to: "x@elsewhere.test",
        mechanism: "LOGIN",
        user: "bob",
        password: "bob-secret",
      }),
    );
    assert.equal(smtps.code, 0, smtps.stdout + smtps.stderr);
    assert.match(smtps.stdout, /<~ {2}334 VXNlcm5hbWU6/);
    assert.match(smtps.stdout, /<~ {2}334 UGFzc3dvcmQ6/);
    assert.match(smtps.stdout, /<~ {2}235 2\.7\.0 /);
    const id = spoolIdIn(smtps.stdout)!;
    assert.deepEqual((await r.f.spool.get(id))?.auth, { mechanism: "LOGIN", user: "bob" });

    const noAuth = await runSwaks(r.ports.submission, [
      "--tls",
      "--from",
      "a@corp.test",
      "--to",
      "u@example.test",
    ]);
    assert.match(noAuth.stdout, /<~\* +530 5\.7\.0 Authentication required/);

    const sub = await runSwaks(
      r.ports.submission,
      swaksAuthArgs({
        tls: "starttls",
        from: "alice@corp.test",
        to: "u@example.test",
        mechanism: "LOGIN",
        user: "alice",
        password: "alice-secret",
      }),
    );
    assert.equal(sub.code, 0, sub.stdout + sub.stderr);
    assert.equal(await r.f.spool.count(), 2);
  } finally {
    await r.stop();
  }
});

Deno.test("Python smtplib login(): refused before TLS, accepted after STARTTLS and on smtps; a wrong password is 535", async () => {
  const r = await rig();
  try {
    const script = `
import smtplib, ssl, sys
plain, smtps = int(sys.argv[1]), int(sys.argv[2])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
c = smtplib.SMTP("127.0.0.1", plain); c.ehlo("py.test")
try:
    c.login("alice", "alice-secret"); print("clear-login ok")
except smtplib.SMTPNotSupportedError:
    print("clear-login not-supported")
print("raw", c.docmd("AUTH", "PLAIN " + "${plainResp("alice", "alice-secret")}"))
c.starttls(context=ctx); c.ehlo("py.test")
print("tls-login", c.login("alice", "alice-secret")[0])
c.sendmail("alice@corp.test", ["far@elsewhere.test"], "Subject: py\\r\\n\\r\\nvia smtplib\\r\\n")
c.quit()
s = smtplib.SMTP_SSL("127.0.0.1", smtps, context=ctx); s.ehlo("py.test")
try:
    s.login("alice", "wrong")
except smtplib.SMTPAuthenticationError as e:
    print("wrong", e.smtp_code, e.smtp_error.decode())
s.user, s.password = "bob", "bob-secret"
print("smtps-login", s.auth("LOGIN", s.auth_login)[0])
s.sendmail("bob@corp.test", ["far@elsewhere.test"], "Subject: py2\\r\\n\\r\\nvia smtps\\r\\n")
s.quit()
`;
    const out = await runPython(script, [String(r.ports.plain), String(r.ports.smtps)]);
    assert.equal(out.code, 0, out.stdout + out.stderr);
    assert.match(out.stdout, /^clear-login not-supported$/m);
    assert.match(
      out.stdout,
      /^raw \(538, b'5\.7\.11 Encryption required for requested authentication mechanism'\)$/m,
    );
    assert.match(out.stdout, /^tls-login 235$/m);
    assert.match(out.stdout, /^wrong 535 5\.7\.8 Authentication credentials invalid$/m);
    assert.match(out.stdout, /^smtps-login 235$/m);
    const envs = (await r.f.spool.list()).map((e) => e.envelope);
    assert.deepEqual(envs.map((e) => e.auth?.user).sort(), ["alice", "bob"]);
    assert.ok(r.f.memlog.has("plain authenticator failed for H="), "failure logged");
    assert.ok(r.f.memlog.has("(set_id=alice)"));
  } finally {
    await r.stop();
  }
});

Deno.test("AUTH replies: empty PLAIN gets '334 ', '*' cancels (501), bad base64 (501), twice (503), in a transaction (503), authzid kept apart", async () => {
  const r = await rig();
  try {
    const a = await raw(r.ports.plain, "starttls", [
      "AUTH PLAIN",
      "*",
      "AUTH PLAIN !!notbase64",
      "AUTH LOGIN",
      "@@@",
      "AUTH CRAM-MD5",
      "AUTH PLAIN",
      plainResp("alice", "alice-secret"),
      "AUTH PLAIN " + plainResp("alice", "alice-secret"),
      "MAIL FROM:<alice@corp.test> AUTH=<>",
    ]);
    assert.match(a[2], /^ehlo-tls .*250-AUTH PLAIN LOGIN/);
    assert.doesNotMatch(a[1], /AUTH/);
    assert.deepEqual(a.slice(3), [
      "> AUTH 334 ",
      "> line 501 5.0.0 Authentication cancelled",
      "> AUTH 501 5.5.2 Cannot decode response",
      "> AUTH 334 VXNlcm5hbWU6",
      "> line 501 5.5.2 Cannot decode response",
      "> AUTH 504 5.5.4 Unrecognized authentication type",
      "> AUTH 334 ",
      "> line 235 2.7.0 Authentication successful",
      "> AUTH 503 5.5.1 Already authenticated",
      "> MAIL 250 2.1.0 Sender OK",
    ]);

    const b = await raw(r.ports.plain, "starttls", [
      "MAIL FROM:<x@corp.test>",
      "AUTH PLAIN " + plainResp("alice", "alice-secret"),
      "RSET",
      "AUTH PLAIN " + plainResp("alice", "alice-secret", "bob"),
      "AUTH PLAIN " + plainResp("alice", "alice-secret", "alice"),
    ]);
    assert.deepEqual(b.slice(3), [
      "> MAIL 250 2.1.0 Sender OK",
      "> AUTH 503 5.5.1 AUTH not permitted during a mail transaction",
      "> line 250 2.0.0 Reset OK",
      "> AUTH 535 5.7.8 Authentication credentials invalid",
      "> AUTH 235 2.7.0 Authentication successful",
    ]);
    assert.ok(r.f.memlog.has("may not act as bob"));
  } finally {
    await r.stop();
  }
});

/** One pipelined group after STARTTLS on `port`: every line in one write; prints each reply as one line. */
const PIPELINED = `
import socket, ssl, sys, json
port, group, replies = int(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = socket.create_connection(("127.0.0.1", port), timeout=5)
f = s.makefile("rb")
def reply():
    lines = []
    while True:
        l = f.readline().decode()
        if not l: return "EOF"
        lines.append(l.rstrip("\\r\\n"))
        if l[3:4] != "-": return lines[-1]
reply(); s.sendall(b"EHLO raw.test\\r\\n"); reply(); s.sendall(b"STARTTLS\\r\\n"); reply()
s = ctx.wrap_socket(s); f = s.makefile("rb")
s.sendall(b"EHLO raw.test\\r\\n"); reply()
s.sendall("".join(line + "\\r\\n" for line in group).encode())
for _ in range(replies): print(reply())
`;

Deno.test("AUTH PLAIN with an initial response may be pipelined with MAIL and RCPT (RFC 4954 4); AUTH LOGIN may not", async () => {
  const r = await rig();
  try {
    const group = async (lines: string[], replies: number) => {
      const out = await runPython(PIPELINED, [
        String(r.ports.submission),
        JSON.stringify(lines),
        String(replies),
      ]);
      assert.equal(out.code, 0, out.stdout + out.stderr);
      return out.stdout.trimEnd().split("\n");
    };
    const mail = ["MAIL FROM:<alice@corp.test>", "RCPT TO:<x@far.test>"];
    assert.deepEqual(await group(["AUTH PLAIN " + plainResp("alice", "alice-secret"), ...mail], 3), [
      "235 2.7.0 Authentication successful",
      "250 2.1.0 Sender OK",
      "250 2.1.5 Recipient OK",
    ]);
    // A wrong password: each pipelined command still gets its own answer (the submission listener's 530).
    assert.deepEqual(await group(["AUTH PLAIN " + plainResp("alice", "wrong"), ...mail], 3), [
      "535 5.7.8 Authentication credentials invalid",
      "530 5.7.0 Authentication required",
      "503 5.5.1 MAIL first",
    ]);
    // LOGIN needs a second round trip for the password: input behind it is a synchronisation error.
    assert.deepEqual(await group(["AUTH LOGIN " + b64("alice"), ...mail], 2), [
      "554 5.5.0 SMTP synchronization error",
      "EOF",
    ]);
  } finally {
    await r.stop();
  }
});

Deno.test("failed AUTH attempts per client address: 421 4.7.0 at the limit, and the next connection is refused too", async () => {
  const r = await rig({ auth: { maxFailures: 3 } });
  try {
    const a = await raw(r.ports.smtps, "smtps", [
      "AUTH PLAIN " + plainResp("alice", "nope1"),
      "AUTH PLAIN " + plainResp("alice", "nope2"),
      "AUTH PLAIN " + plainResp("mallory", "nope3"),
      "NOOP",
    ]);
    assert.deepEqual(a.slice(2), [
      "> AUTH 535 5.7.8 Authentication credentials invalid",
      "> AUTH 535 5.7.8 Authentication credentials invalid",
      "> AUTH 421 4.7.0 Too many failed authentication attempts, closing connection",
      "> line EOF",
    ]);
    const b = await raw(r.ports.smtps, "smtps", ["AUTH PLAIN " + plainResp("alice", "alice-secret")]);
    assert.equal(b[2], "> AUTH 421 4.7.0 Too many failed authentication attempts, closing connection");
  } finally {
    await r.stop();
  }
});

Deno.test("auth.check backs logins with a function: a lookup failure is 454 4.7.0, its answer decides otherwise", async () => {
  const pki = await createPki();
  const cert = await pki.issue({ cn: "ferry.test", dns: ["ferry.test"] });
  const asked: unknown[] = [];
  const f = await startTestFerry({
    listen: [{ address: "127.0.0.1", port: 0, mode: "smtps" }],
    tls: ferryTls(cert),
    auth: {
      check: (req: { user: string; password: string; authzid: string }) => {
        asked.push({ user: req.user, authzid: req.authzid });
        if (req.user === "down") throw new Error("backend unreachable");
        return req.user === "carol" && req.password === "pw";
      },
    },
  });
  try {
    const a = await raw(f.port, "smtps", [
      "AUTH PLAIN " + plainResp("down", "x"),
      "AUTH PLAIN " + plainResp("carol", "bad"),
      "AUTH PLAIN " + plainResp("carol", "pw", "admin"),
    ]);
    assert.deepEqual(a.slice(2), [
      "> AUTH 454 4.7.0 Temporary authentication failure",
      "> AUTH 535 5.7.8 Authentication credentials invalid",
      "> AUTH 235 2.7.0 Authentication successful",
    ]);
    assert.deepEqual(asked[2], { user: "carol", authzid: "admin" });
    assert.ok(f.memlog.has("backend unreachable"));
  } finally {
    await f.stop();
    await pki.cleanup();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("auth.senderLogins binds senders to logins: 553 5.7.1 for someone else's address and for an anonymous owner's address", async () => {
  const r = await rig({
    auth: { senderLogins: { "alice@corp.test": ["alice"], "@corp.test": ["bob"] } },
  });
  try {
    const a = await raw(r.ports.plain, "starttls", [
      "AUTH PLAIN " + plainResp("alice", "alice-secret"),
      "MAIL FROM:<bob@corp.test>",
      "MAIL FROM:<ALICE@corp.test>",
    ]);
    assert.deepEqual(a.slice(3), [
      "> AUTH 235 2.7.0 Authentication successful",
      "> MAIL 553 5.7.1 Sender address rejected: not owned by user alice",
      "> MAIL 250 2.1.0 Sender OK",
    ]);
    const b = await raw(r.ports.plain, "starttls", [
      "MAIL FROM:<alice@corp.test>",
      "MAIL FROM:<x@other.test>",
    ]);
    assert.deepEqual(b.slice(3), [
      "> MAIL 553 5.7.1 Sender address rejected: not logged in",
      "> MAIL 250 2.1.0 Sender OK",
    ]);
    const swaks = await runSwaks(
      r.ports.submission,
      swaksAuthArgs({
        tls: "starttls",
        from: "someone@corp.test",
        to: "u@example.test",
        mechanism: "PLAIN",
        user: "alice",
        password: "alice-secret",
      }),
    );
    assert.match(swaks.stdout, /<~\* +553 5\.7\.1 Sender address rejected: not owned by user alice/);
  } finally {
    await r.stop();
  }
});

Deno.test("client side: a route AUTHs to a smarthost (a second Ferry's submission listener) over TLS; a wrong password defers", async () => {
  const upstream = await rig();
  const mk = (password: string) =>
    startTestFerry({
      relay: { domains: [], clients: ["127.0.0.0/8"] },
      delivery: { enable: true },
      routes: [{
        domains: "*",
        hosts: ["127.0.0.1"],
        port: upstream.ports.submission,
        auth: { user: "alice", password },
      }],
    }, { resolver: new MemoryResolver() });
  const good = await mk("alice-secret");
  const bad = await mk("wrong");
  try {
    const s1 = await runSwaks(good.port, ["--from", "alice@corp.test", "--to", "far@elsewhere.test"]);
    const id1 = spoolIdIn(s1.stdout)!;
    await waitFor(() => good.memlog.has("Completed"), 15_000, "the message delivered through the smarthost");
    const [got] = await upstream.f.spool.list();
    assert.deepEqual(got.envelope.auth, { mechanism: "PLAIN", user: "alice" });
    assert.deepEqual(got.envelope.recipients.map((x) => x.address), ["far@elsewhere.test"]);
    assert.equal(await good.spool.get(id1), undefined);

    const s2 = await runSwaks(bad.port, ["--from", "alice@corp.test", "--to", "far@elsewhere.test"]);
    const id2 = spoolIdIn(s2.stdout)!;
    await waitFor(() => bad.memlog.has("AUTH failed"), 15_000, "the AUTH failure logged");
    const env = await bad.spool.get(id2);
    assert.ok(env, "deferred message stays queued");
    assert.equal(env.recipients[0].status, "pending");
    assert.equal(await upstream.f.spool.count(), 1);
  } finally {
    for (const f of [good, bad]) {
      await f.stop();
      await Deno.remove(f.dir, { recursive: true }).catch(() => {});
    }
    await upstream.stop();
  }
});

Deno.test("client side: a route with auth never sends the password in clear (peer without STARTTLS → deferred)", async () => {
  const upstream = await startTestFerry({
    auth: { users: { alice: ALICE } },
    relay: { domains: [], clients: ["127.0.0.0/8"] },
  });
  const f = await startTestFerry({
    relay: { domains: [], clients: ["127.0.0.0/8"] },
    delivery: { enable: true },
    routes: [{
      domains: "*",
      hosts: ["127.0.0.1"],
      port: upstream.port,
      auth: { user: "alice", password: "x" },
    }],
  }, { resolver: new MemoryResolver() });
  try {
    const s = await runSwaks(f.port, ["--from", "a@corp.test", "--to", "far@elsewhere.test"]);
    const id = spoolIdIn(s.stdout)!;
    await waitFor(() => f.memlog.has("AUTH needs TLS"), 15_000, "the deferral for AUTH without TLS logged");
    assert.ok(await f.spool.get(id));
    assert.equal(await upstream.spool.count(), 0);
    assert.ok(!upstream.memlog.has("AUTH"), "no AUTH command reached the peer");
  } finally {
    for (const x of [f, upstream]) {
      await x.stop();
      await Deno.remove(x.dir, { recursive: true }).catch(() => {});
    }
  }
});

Deno.test("policy sees the login: a policy.mail step records c.auth (PLAIN, LOGIN, and none without AUTH)", async () => {
  const seen: unknown[] = [];
  const r = await rig({
    policy: {
      mail: [async function record_auth(c, next) {
        const a = c.auth;
        seen.push(
          a === undefined ? "anonymous" : { mechanism: a.mechanism, user: a.user, authzid: a.authzid },
        );
        await next();
      }],
    },
  });
  try {
    const plain = await runSwaks(
      r.ports.plain,
      swaksAuthArgs({
        tls: "starttls",
        from: "alice@corp.test",
        to: "a@example.test",
        mechanism: "PLAIN",
        user: "alice",
        password: "alice-secret",
      }),
    );
    assert.equal(plain.code, 0, plain.stdout);
    const login = await runSwaks(
      r.ports.submission,
      swaksAuthArgs({
        tls: "starttls",
        from: "bob@corp.test",
        to: "b@example.test",
        mechanism: "LOGIN",
        user: "bob",
        password: "bob-secret",
      }),
    );
    assert.equal(login.code, 0, login.stdout);
    const anonymous = await runSwaks(r.ports.plain, [
      "--tls",
      "--from",
      "x@corp.test",
      "--to",
      "c@example.test",
    ]);
    assert.equal(anonymous.code, 0, anonymous.stdout);
    assert.deepEqual(seen, [
      { mechanism: "PLAIN", user: "alice", authzid: undefined },
      { mechanism: "LOGIN", user: "bob", authzid: undefined },
      "anonymous",
    ]);
  } finally {
    await r.stop();
  }
});

Deno.test("AUTH exchange: a response line over 12288 octets is 500 5.5.6 and the next line (NOOP) is a command again", async () => {
  const r = await rig();
  try {
    const a = await raw(r.ports.smtps, "smtps", [
      "AUTH LOGIN",
      "A".repeat(13_000),
      "NOOP",
      "AUTH PLAIN " + plainResp("alice", "alice-secret"),
    ]);
    assert.deepEqual(a.slice(2), [
      "> AUTH 334 VXNlcm5hbWU6",
      "> line 500 5.5.6 Authentication Exchange line is too long",
      "> line 250 2.0.0 OK",
      "> AUTH 235 2.7.0 Authentication successful",
    ]);
  } finally {
    await r.stop();
  }
});
