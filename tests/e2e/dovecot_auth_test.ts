/**
 * `auth.check: dovecotAuth({ socket })` against a real Dovecot (Debian's dovecot-core) started from a temp
 * config: a passwd-file passdb and an auth-client UNIX socket. swaks authenticates through Ferry; Dovecot
 * decides.
 */

import assert from "node:assert/strict";
import { startTestFerry } from "../helpers/ferry.ts";
import { createPki, ferryTls } from "../helpers/pki.ts";
import { runSwaks, spoolIdIn, swaksAuthArgs } from "../helpers/peers.ts";
import { loadOpenSsl } from "../../src/tls/mod.ts";
import { dovecotAuth } from "../../mod.ts";

loadOpenSsl();

/** A Dovecot running only its auth service, its auth-client socket in a temp dir. */
async function startDovecot(users: Record<string, string>, opts: { unreadablePassdb?: boolean } = {}) {
  const dir = await Deno.makeTempDir({ prefix: "ferry-dovecot-" });
  // Dovecot's auth process runs as the dovecot user: it must reach the passwd file.
  await Deno.chmod(dir, 0o755);
  await Deno.mkdir(`${dir}/run`);
  await Deno.mkdir(`${dir}/state`);
  await Deno.mkdir(`${dir}/db`);
  const passwd = `${dir}/db/passwd`;
  await Deno.writeTextFile(
    passwd,
    Object.entries(users).map(([u, p]) => `${u}:{PLAIN}${p}::::::\n`).join(""),
    { mode: 0o644 },
  );
  // Unreadable: Dovecot's auth process (user dovecot) cannot reach the passwd file: a lookup failure.
  await Deno.chmod(`${dir}/db`, opts.unreadablePassdb ? 0o700 : 0o755);
  const conf = `${dir}/dovecot.conf`;
  await Deno.writeTextFile(
    conf,
    [
      `base_dir = ${dir}/run`,
      `state_dir = ${dir}/state`,
      `log_path = ${dir}/dovecot.log`,
      "protocols = none",
      "ssl = no",
      "auth_mechanisms = plain",
      "auth_failure_delay = 0",
      "disable_plaintext_auth = no",
      `passdb {\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u ${passwd}\n}`,
      "userdb {\n  driver = static\n  args = uid=nobody gid=nogroup home=/nonexistent\n}",
      "service auth {\n  unix_listener auth-client {\n    mode = 0666\n  }\n}",
      "",
    ].join("\n"),
  );
  const child = new Deno.Command("/usr/sbin/dovecot", {
    args: ["-F", "-c", conf],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const socket = `${dir}/run/auth-client`;
  // Positive signal: the auth service answers its handshake on the socket.
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const c = await Deno.connect({ transport: "unix", path: socket });
      await c.write(new TextEncoder().encode(`VERSION\t1\t2\nCPID\t${Deno.pid}\n`));
      const buf = new Uint8Array(4096);
      const n = await c.read(buf);
      c.close();
      if (n && new TextDecoder().decode(buf.subarray(0, n)).includes("VERSION\t1")) break;
    } catch (err) {
      if (Date.now() > deadline) {
        child.kill("SIGTERM");
        const out = await child.output();
        throw new Error(`dovecot did not start: ${err}; ${new TextDecoder().decode(out.stderr)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    socket,
    log: () => Deno.readTextFile(`${dir}/dovecot.log`).catch(() => ""),
    async stop() {
      child.kill("SIGTERM");
      await child.output();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

const swaksAuth = (port: number, user: string, password: string) =>
  runSwaks(port, [
    ...swaksAuthArgs({
      tls: "smtps",
      from: `${user}@corp.test`,
      to: "x@example.test",
      mechanism: "PLAIN",
      user,
      password,
    }),
    "--timeout",
    "40",
  ]);

Deno.test("dovecotAuth: Dovecot's auth-client socket decides logins (235, 535), a Dovecot lookup failure is 454 4.7.0, a dead socket fails the lookup", async () => {
  const dovecot = await startDovecot({ alice: "alice-secret" });
  const pki = await createPki();
  const cert = await pki.issue({ cn: "ferry.test", dns: ["ferry.test"] });
  const f = await startTestFerry({
    listen: [{ address: "127.0.0.1", port: 0, mode: "smtps" }],
    tls: ferryTls(cert),
    relay: { domains: ["example.test"], clients: [] },
    auth: { check: dovecotAuth({ socket: dovecot.socket, timeoutMs: 30_000 }), maxFailures: 100 },
  });
  const brokenDovecot = await startDovecot({ alice: "alice-secret" }, { unreadablePassdb: true });
  const broken = await startTestFerry({
    listen: [{ address: "127.0.0.1", port: 0, mode: "smtps" }],
    tls: ferryTls(cert),
    relay: { domains: ["example.test"], clients: [] },
    auth: { check: dovecotAuth({ socket: brokenDovecot.socket }), maxFailures: 100 },
  });
  try {
    const good = await swaksAuth(f.port, "alice", "alice-secret");
    assert.equal(good.code, 0, good.stdout + good.stderr);
    assert.match(good.stdout, /<~ {2}235 2\.7\.0 /);
    const id = spoolIdIn(good.stdout)!;
    assert.deepEqual((await f.spool.get(id))?.auth, { mechanism: "PLAIN", user: "alice" });

    // Dovecot delays answers after failures from one address (its auth penalty), hence the long timeouts.
    const wrong = await swaksAuth(f.port, "alice", "not-her-password");
    assert.match(wrong.stdout, /<~\* 535 5\.7\.8 /);
    const nobody = await swaksAuth(f.port, "mallory", "alice-secret");
    assert.match(nobody.stdout, /<~\* 535 5\.7\.8 /);

    // Dovecot cannot read its passdb: it answers FAIL … code=temp_fail, which is a lookup failure.
    const temp = await swaksAuth(broken.port, "alice", "alice-secret");
    assert.match(temp.stdout, /<~\* 454 4\.7\.0 /);
    assert.ok(broken.memlog.has("temporary authentication failure"));
    assert.match(await brokenDovecot.log(), /passwd-file/);

    // A socket that is not there fails the lookup too: a rejection, the path the 454 above comes from.
    await assert.rejects(
      () => dovecotAuth({ socket: `${f.dir}/no-such-socket` })({ user: "alice", authzid: "", password: "x" }),
      /no-such-socket/,
    );
  } finally {
    await f.stop();
    await broken.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
    await Deno.remove(broken.dir, { recursive: true }).catch(() => {});
    await pki.cleanup();
    await dovecot.stop();
    await brokenDovecot.stop();
  }
});
