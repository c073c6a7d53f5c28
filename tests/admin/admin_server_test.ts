/** The admin listener: open health/readiness, tokens (configured or generated to a 0600 file), redacted config, start-up errors. */

import assert from "node:assert/strict";
import { api, startAdminFerry, stopFerry } from "./_admin.ts";
import { startTestFerry } from "../helpers/ferry.ts";
import { ConfigError, validateConfig } from "../../src/config/load.ts";
import { hashPassword } from "../../src/core/password_hash.ts";
import { runFerryCli, writeConfig } from "../helpers/process.ts";
import { TestRedis } from "../helpers/redis.ts";

Deno.test("admin: /healthz and /readyz need no token; /api needs one (401 JSON); a generated token is kept in a 0600 file", async () => {
  const f = await startAdminFerry();
  try {
    assert.notEqual(f.admin!.port, 8025, "port 0 picked a free port");
    assert.deepEqual((await api(f, "/healthz", { token: null })).body, { status: "ok" });
    const ready = await api(f, "/readyz", { token: null });
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.body, { ready: true, spool: true, listeners: true, stopping: false });

    const none = await api(f, "/api/config", { token: null });
    assert.equal(none.status, 401);
    assert.deepEqual(none.body, { error: "missing bearer token" });
    assert.match(none.headers.get("www-authenticate") ?? "", /^Bearer/);
    const wrong = await api(f, "/api/config", { token: "not-the-token-at-all" });
    assert.equal(wrong.status, 401);
    assert.deepEqual(wrong.body, { error: "invalid bearer token" });

    const path = `${f.dir}/spool/admin.token`;
    const st = await Deno.stat(path);
    assert.equal(st.mode! & 0o777, 0o600);
    assert.equal((await Deno.readTextFile(path)).trim(), f.adminToken);
    assert.ok(f.memlog.has(`admin token written to ${path}`));
    assert.equal((await api(f, "/api/config")).status, 200);
    assert.equal((await api(f, "/api/nothing-here")).status, 404);
  } finally {
    await stopFerry(f);
  }
});

Deno.test("admin: a restart reuses the token file; configured tokens replace it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-admin-" });
  try {
    const spool = { dir: `${dir}/spool` };
    const a = await startTestFerry({ spool, admin: { listen: "127.0.0.1:0" } });
    const first = a.adminToken;
    await a.stop();
    const b = await startTestFerry({ spool, admin: { listen: "127.0.0.1:0" } });
    assert.equal(b.adminToken, first);
    assert.ok(b.memlog.has("admin token read from"));
    await b.stop();
    const c = await startTestFerry({
      spool,
      admin: { listen: "127.0.0.1:0", tokens: ["configured-token-0123456789"] },
    });
    try {
      const base = c.admin!.url;
      const ok = await fetch(`${base}/api/config`, {
        headers: { authorization: "Bearer configured-token-0123456789" },
      });
      assert.equal(ok.status, 200);
      const cfg = await ok.json();
      assert.equal(cfg.admin.tokens, "[redacted]");
      const old = await fetch(`${base}/api/config`, { headers: { authorization: `Bearer ${first}` } });
      await old.body?.cancel();
      assert.equal(old.status, 401);
    } finally {
      await c.stop();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("admin: /api/config is the effective config with defaults, secrets redacted and functions named", async () => {
  // A real Redis that wants a password, given once in the URL's userinfo and once as `password`.
  const redis = await TestRedis.start({ password: "redisPassw0rd" });
  const f = await startAdminFerry({
    auth: { users: { alice: await hashPassword("pw", { n: 1024 }) } },
    routes: [{
      name: "smarthost",
      domains: "*",
      hosts: ["192.0.2.1"],
      auth: { user: "relay", password: "s3cr3t" },
    }],
    srs: { domain: "srs.ferry.test", secrets: ["srsSecretOne", "srsSecretTwo"] },
    redis: {
      servers: [
        { url: `redis://:redisPassw0rd@127.0.0.1:${redis.port}` },
        { url: `redis://127.0.0.1:${redis.port}`, password: "redisPassw0rd", db: 1 },
      ],
    },
    policy: {
      rcpt: [async function no_noreply(_c, next) {
        await next();
      }],
    },
  });
  try {
    const r = await api(f, "/api/config");
    assert.equal(r.status, 200);
    assert.equal(r.body.limits.commandLine, 512, "defaults filled in");
    assert.equal(r.body.auth.users, "[redacted]");
    assert.equal(r.body.routes[0].auth.password, "[redacted]");
    assert.equal(r.body.routes[0].auth.user, "relay");
    assert.deepEqual(r.body.policy.rcpt, ["[function no_noreply]"]);
    assert.equal(r.body.srs.secrets, "[redacted]");
    assert.equal(r.body.srs.domain, "srs.ferry.test");
    assert.equal(r.body.redis.servers[0].url, `redis://[redacted]@127.0.0.1:${redis.port}`);
    assert.equal(r.body.redis.servers[1].url, `redis://127.0.0.1:${redis.port}`);
    assert.equal(r.body.redis.servers[1].password, "[redacted]");
    const all = JSON.stringify(r.body);
    for (const secret of ["s3cr3t", "scrypt$", "srsSecret", "redisPassw0rd"]) {
      assert.ok(!all.includes(secret), `${secret} is not shown`);
    }
  } finally {
    await stopFerry(f);
    await redis.cleanup();
  }
});

Deno.test("admin config: a non-loopback listener needs tokens and a certificate; a bad address is named", () => {
  const problems = (input: Record<string, unknown>) => {
    try {
      validateConfig(input);
      return "";
    } catch (err) {
      if (err instanceof ConfigError) return err.problems.join("\n");
      throw err;
    }
  };
  assert.match(
    problems({ admin: { listen: "0.0.0.0:8025" } }),
    /^admin\.listen: a non-loopback admin listener needs admin\.tokens and admin\.tls/,
  );
  assert.match(
    problems({ admin: { listen: "0.0.0.0:8025", tokens: ["0123456789abcdef"] } }),
    /admin\.listen: a non-loopback/,
  );
  assert.equal(
    problems({
      admin: { listen: "0.0.0.0:8025", tokens: ["0123456789abcdef"], tls: { cert: "c.pem", key: "k.pem" } },
    }),
    "",
  );
  assert.equal(problems({ admin: { listen: "[::1]:0" } }), "");
  assert.match(problems({ admin: { listen: "localhost:8025" } }), /admin\.listen: expected "address:port"/);
  assert.match(problems({ admin: { tokens: ["short"] } }), /admin\.tokens\[0\]: a token needs at least 16/);
});

Deno.test("admin: a port already in use stops start-up with exit 78 naming admin.listen", async () => {
  const busy = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dir = await Deno.makeTempDir({ prefix: "ferry-admin-" });
  try {
    const port = (busy.addr as Deno.NetAddr).port;
    const config = await writeConfig(
      dir,
      `{ listen: [{ address: "127.0.0.1", port: 0 }], spool: { dir: ${JSON.stringify(`${dir}/spool`)} },
        delivery: { enable: false }, admin: { listen: "127.0.0.1:${port}" } }`,
    );
    const r = await runFerryCli(["--config", config]);
    assert.equal(r.code, 78, r.stderr + r.stdout);
    assert.match(r.stderr, new RegExp(`config: admin\\.listen: cannot listen on 127\\.0\\.0\\.1:${port}: `));
  } finally {
    busy.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("admin over HTTPS on a configured certificate", async () => {
  const { createPki } = await import("../helpers/pki.ts");
  const pki = await createPki();
  const cert = await pki.issue({ cn: "127.0.0.1", dns: ["localhost"] });
  const f = await startAdminFerry({
    admin: {
      listen: "127.0.0.1:0",
      tokens: ["https-token-0123456789"],
      tls: { cert: cert.chainFile, key: cert.keyFile },
    },
  });
  try {
    assert.match(f.base, /^https:\/\//);
    const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(pki.certFile)] });
    const res = await fetch(f.base.replace("127.0.0.1", "localhost") + "/healthz", { client }).catch(
      async () => await fetch(f.base + "/healthz", { client }),
    );
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: "ok" });
    client.close();
  } finally {
    await stopFerry(f);
    await pki.cleanup();
  }
});
