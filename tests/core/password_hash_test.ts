import assert from "node:assert/strict";
import { hashPassword, parseScryptHash, verifyPassword } from "../../src/core/password_hash.ts";
import { validateConfig } from "../../src/config/load.ts";
import { ConfigError } from "../../src/config/load.ts";

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
