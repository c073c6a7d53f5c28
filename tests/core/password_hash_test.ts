import assert from "node:assert/strict";
import { hashPassword, parseScryptHash, verifyPassword } from "../../src/core/password_hash.ts";
import { validateConfig } from "../../src/config/load.ts";
import { ConfigError } from "../../src/config/load.ts";
import { runPython } from "../helpers/peers.ts";

Deno.test("hashPassword() makes a salted scrypt hash that verifyPassword() accepts only for the right password", async () => {
  const a = await hashPassword("s3cret", { n: 1024 });
  const b = await hashPassword("s3cret", { n: 1024 });
  assert.match(a, /^scrypt\$1024\$8\$1\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*$/);
  assert.notEqual(a, b, "salts differ");
  assert.equal(await verifyPassword("s3cret", a), true);
  assert.equal(await verifyPassword("s3cret ", a), false);
  assert.equal(await verifyPassword("", a), false);
  assert.equal(await verifyPassword("s3cret", undefined), false);
  assert.equal(
    await verifyPassword("s3cret", "scrypt$1000$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA=="),
    false,
  );
});

Deno.test("parseScryptHash() refuses N that is not a power of two, short salts and other formats", () => {
  assert.equal(parseScryptHash("bcrypt$2y$10$abc"), undefined);
  assert.equal(parseScryptHash("scrypt$1000$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA=="), undefined);
  assert.equal(parseScryptHash("scrypt$1024$8$1$AAAA$AAAAAAAAAAAAAAAAAAAAAA=="), undefined);
  assert.ok(parseScryptHash("scrypt$1024$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA=="));
});

Deno.test("deno task hash-password prints a hash of the password read from standard input", async () => {
  const child = new Deno.Command("deno", {
    args: ["task", "-q", "hash-password"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode("pw-from-stdin\n"));
  await w.close();
  const out = await child.output();
  const hash = new TextDecoder().decode(out.stdout).trim();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  assert.equal(await verifyPassword("pw-from-stdin", hash), true);
});

/** Runs a command on a pseudo-terminal, answers each prompt in turn, and prints `{ code, out }` as JSON. */
const ON_PTY = `
import json, os, select, subprocess, sys, time
answers = json.loads(sys.argv[1])
master, slave = os.openpty()
p = subprocess.Popen(sys.argv[2:], stdin=slave, stdout=slave, stderr=slave, close_fds=True)
os.close(slave)
out = b""
def more(deadline):
    global out
    r, _, _ = select.select([master], [], [], max(0, deadline - time.time()))
    if not r: return False
    try: chunk = os.read(master, 4096)
    except OSError: return False
    if not chunk: return False
    out += chunk
    return True
for prompt, answer in answers:
    deadline = time.time() + 120
    while prompt.encode() not in out:
        if not more(deadline): sys.exit("no %r in %r" % (prompt, out))
    out = out.replace(prompt.encode(), b"<" + prompt.strip().encode() + b">", 1)
    os.write(master, answer.encode())
deadline = time.time() + 120
while more(deadline): pass
print(json.dumps({"code": p.wait(), "out": out.decode(errors="replace")}))
`;

Deno.test("deno task hash-password on a terminal asks twice with echo off: the password never shows", async () => {
  const answers = [["Password: ", "pty-s3cret\r"], ["Again: ", "pty-s3cret\r"]];
  const r = await runPython(
    ON_PTY,
    [JSON.stringify(answers), Deno.execPath(), "task", "-q", "hash-password"],
    {
      timeoutMs: 240_000,
    },
  );
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const { code, out } = JSON.parse(r.stdout) as { code: number; out: string };
  assert.equal(code, 0, out);
  assert.match(out, /<Password:>[\s\S]*<Again:>/);
  assert.doesNotMatch(out, /pty-s3cret/, "nothing typed was echoed");
  const hash = /scrypt\$\S+/.exec(out)?.[0];
  assert.ok(hash, out);
  assert.equal(await verifyPassword("pty-s3cret", hash), true);

  const differ = [["Password: ", "one-password\r"], ["Again: ", "another-one\r"]];
  const d = await runPython(
    ON_PTY,
    [JSON.stringify(differ), Deno.execPath(), "task", "-q", "hash-password"],
    {
      timeoutMs: 240_000,
    },
  );
  const second = JSON.parse(d.stdout) as { code: number; out: string };
  assert.equal(second.code, 64, second.out);
  assert.match(second.out, /the passwords differ/);
  assert.doesNotMatch(second.out, /one-password|another-one|scrypt\$/);
});

Deno.test("auth config errors name the field: a bad hash, no credentials, submission without auth or TLS", () => {
  const problems = (input: Record<string, unknown>) => {
    try {
      validateConfig(input);
    } catch (err) {
      if (err instanceof ConfigError) return err.problems.join("\n");
      throw err;
    }
    return "";
  };
  assert.match(problems({ auth: { users: { alice: "plaintext" } } }), /auth\.users\.alice: expected a hash/);
  assert.match(problems({ auth: {} }), /auth: auth needs users or check/);
  assert.match(
    problems({ listen: [{ port: 0, submission: true }] }),
    /listen\[0\]\.submission: submission needs auth/,
  );
  assert.match(
    problems({ listen: [{ port: 0, submission: true }], auth: { check: () => true } }),
    /listen\[0\]\.submission: submission needs tls\.certificates/,
  );
  assert.match(
    problems({ routes: [{ domains: "*", mx: true, auth: { user: "u" } }] }),
    /routes\[0\]\.auth\.password/,
  );
});
