/**
 * The command line on bad and good configuration files: exit 78 (EX_CONFIG) with one `config: <path>: …`
 * line per problem and no stack trace; `--check-config` says "configuration OK" and exits 0.
 */

import assert from "node:assert/strict";
import { fileURLToPath as fromFileUrl } from "node:url";
import { MOD_URL, runFerryCli, writeConfig } from "../helpers/process.ts";
import { createPki } from "../helpers/pki.ts";

/** Asserts a config-error run: exit 78, every expected path named on its own line, nothing else, no stack. */
function assertConfigErrors(r: { code: number; stdout: string; stderr: string }, expected: RegExp[]): void {
  assert.equal(r.code, 78, `exit code; stderr:\n${r.stderr}`);
  const lines = r.stderr.split("\n").filter((l) => l.trim() !== "");
  for (const l of lines) assert.match(l, /^config: \S/, `every stderr line is a config problem: ${l}`);
  assert.doesNotMatch(r.stderr, /^\s+at /m, "no stack trace frames");
  assert.doesNotMatch(r.stderr, /\bat (file|ext|node):/, "no stack trace frames");
  for (const re of expected) {
    assert.equal(lines.filter((l) => re.test(l)).length, 1, `exactly one line matches ${re}:\n${r.stderr}`);
  }
  assert.equal(lines.length, expected.length, `one line per problem:\n${r.stderr}`);
  assert.equal(r.stdout, "", "nothing started (no log lines: no spool opened, no port bound)");
}

Deno.test("a config with six problems exits 78 and names each problem's path on its own line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-cfg-" });
  try {
    const path = await writeConfig(
      dir,
      `{
  listen: [{ address: "127.0.0.1", port: 2525 }, { address: "127.0.0.1", port: 70000 }],
  frobnicate: true,
  limits: { messageSize: "10 parsecs" },
  relay: { clients: ["10.0.0.0/33"] },
  policy: { rcpt: ["not a function"] },
  tls: { certificates: [{ cert: "/nonexistent/cert.pem" }] },
} as never`,
    );
    const r = await runFerryCli(["--config", path]);
    assertConfigErrors(r, [
      /^config: listen\[1\]\.port: /,
      /^config: frobnicate: unknown option$/,
      /^config: limits\.messageSize: .*10 parsecs/,
      /^config: relay\.clients: .*10\.0\.0\.0\/33/,
      /^config: policy\.rcpt\[0\]: expected a function$/,
      /^config: tls\.certificates\[0\]\.key: /,
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("each kind of config problem alone exits 78 with exactly one line naming it", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-cfg-" });
  try {
    const cases: [string, RegExp][] = [
      [`{ listen: [{ port: 25 }, { port: 70000 }] }`, /^config: listen\[1\]\.port: .*65535/],
      [`{ spool: { dir: "/tmp/x", color: "blue" } } as never`, /^config: spool\.color: unknown option$/],
      [`{ limits: { messageSize: "lots" } }`, /^config: limits\.messageSize: .*"lots"/],
      [`{ relay: { clients: ["192.0.2.0/99"] } }`, /^config: relay\.clients: .*192\.0\.2\.0\/99/],
      [`{ policy: { rcpt: [42] } } as never`, /^config: policy\.rcpt\[0\]: expected a function$/],
      [
        `{ tls: { certificates: [{ cert: "/nonexistent/c.pem" }] } } as never`,
        /^config: tls\.certificates\[0\]\.key: /,
      ],
      [`{ proxyTimeout: "soon" }`, /^config: proxyTimeout: .*"soon"/],
      // Found only at start-up, still config errors naming the path.
      [
        `{ listen: [{ port: 0 }], delivery: { enable: false }, spool: { dir: ${JSON.stringify(`${dir}/sp`)} },
           log: { file: "/nonexistent/dir/ferry.log" } }`,
        /^config: log\.file: cannot open "\/nonexistent\/dir\/ferry\.log"/,
      ],
      [
        `{ listen: [{ port: 0 }], spool: { dir: ${JSON.stringify(`${dir}/sp`)} },
           dns: { nameservers: [{ address: "127.0.0.1", port: 9 }] },
           delivery: { enable: true, tlsVerifyCertificates: "/nonexistent/ca.pem" } }`,
        /^config: delivery\.tlsVerifyCertificates: .*\/nonexistent\/ca\.pem/,
      ],
      [
        `{ listen: [{ port: 0 }], delivery: { enable: false }, spool: { dir: ${JSON.stringify(`${dir}/sp`)} },
           tls: { certificates: [{ cert: "/nonexistent/c.pem", key: "/nonexistent/k.pem" }] } }`,
        /^config: tls\.certificates.*\/nonexistent\/c\.pem/,
      ],
    ];
    const runs = await Promise.all(cases.map(async ([literal], i) => {
      const path = await writeConfig(dir, literal, `case${i}.ts`);
      return await runFerryCli(["--config", path]);
    }));
    runs.forEach((r, i) => assertConfigErrors(r, [cases[i][1]]));
    await assert.rejects(Deno.stat(`${dir}/sp`), Deno.errors.NotFound, "no spool was created");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a missing config file, a syntax error and a throwing module exit 78 without a stack trace", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-cfg-" });
  try {
    const missing = `${dir}/nope.ts`;
    const syntax = `${dir}/syntax.ts`;
    await Deno.writeTextFile(
      syntax,
      `import { defineConfig } from ${
        JSON.stringify(MOD_URL)
      };\nexport default defineConfig({ listen: [ });\n`,
    );
    const throws = `${dir}/throws.ts`;
    await Deno.writeTextFile(throws, `throw new Error("config exploded");\nexport default {};\n`);
    const noDefault = `${dir}/nodefault.ts`;
    await Deno.writeTextFile(noDefault, `export const config = {};\n`);
    const [a, b, c, d] = await Promise.all(
      [missing, syntax, throws, noDefault].map((p) => runFerryCli(["--config", p])),
    );
    assertConfigErrors(a, [new RegExp(`^config: ${missing}: .*not found`)]);
    assertConfigErrors(b, [new RegExp(`^config: ${syntax}: cannot load: .*SyntaxError`)]);
    assertConfigErrors(c, [new RegExp(`^config: ${throws}: cannot load: config exploded$`)]);
    assertConfigErrors(d, [new RegExp(`^config: ${noDefault}: no default export`)]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--check-config on a good config exits 0 with 'configuration OK' and starts nothing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-cfg-" });
  try {
    const spool = `${dir}/spool`;
    const path = await writeConfig(
      dir,
      `{
  listen: [{ address: "127.0.0.1", port: 1 }],
  spool: { dir: ${JSON.stringify(spool)} },
  limits: { messageSize: "10MB", shutdownGrace: "2s" },
  relay: { domains: ["example.test"], clients: ["127.0.0.0/8"] },
  policy: { rcpt: [async function ok(_c, next) { await next(); }] },
}`,
    );
    const r = await runFerryCli(["--config", path, "--check-config"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /configuration OK/);
    assert.equal(r.stderr, "");
    // Checking must not bind ports or create the spool.
    await assert.rejects(Deno.stat(spool), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("--check-config reads the files the config names: a missing CA or certificate file exits 78", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-cfg-" });
  try {
    const ca = await writeConfig(
      dir,
      `{ delivery: { enable: true, tlsVerifyCertificates: "/nonexistent/ca.pem" } }`,
      "ca.ts",
    );
    const cert = await writeConfig(
      dir,
      `{ tls: { certificates: [{ cert: "/nonexistent/c.pem", key: "/nonexistent/k.pem" }] } }`,
      "cert.ts",
    );
    const [a, b] = await Promise.all([ca, cert].map((p) => runFerryCli(["--config", p, "--check-config"])));
    assertConfigErrors(a, [/^config: delivery\.tlsVerifyCertificates: .*\/nonexistent\/ca\.pem/]);
    assertConfigErrors(b, [/^config: tls\.certificates.*\/nonexistent\/c\.pem/]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a TLS cipher list, suites or groups OpenSSL refuses exit 78 naming tls.ciphers, tls.ciphersuites or tls.groups", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-cfg-" });
  const pki = await createPki();
  try {
    const leaf = await pki.issue({ cn: "mx.test", dns: ["mx.test"] });
    const certificates = `[{ cert: ${JSON.stringify(leaf.chainFile)}, key: ${
      JSON.stringify(leaf.keyFile)
    } }]`;
    const cases: [string, RegExp][] = [
      [`ciphers: "NOTACIPHER"`, /^config: tls\.ciphers: .*NOTACIPHER/],
      [`ciphersuites: "TLS_NOT_A_SUITE"`, /^config: tls\.ciphersuites: .*TLS_NOT_A_SUITE/],
      [`groups: "nogroup"`, /^config: tls\.groups: .*nogroup/],
    ];
    const runs = await Promise.all(cases.map(async ([field], i) => {
      const path = await writeConfig(dir, `{ tls: { certificates: ${certificates}, ${field} } }`, `c${i}.ts`);
      return runFerryCli(["--config", path, "--check-config"]);
    }));
    runs.forEach((r, i) => assertConfigErrors(r, [cases[i][1]]));
  } finally {
    await pki.cleanup();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test('ratelimit store "redis" or a Redis lookup host list without redis exits 78 naming the field; with redis it is OK', async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-cfg-" });
  try {
    const spool = `spool: { dir: ${JSON.stringify(`${dir}/sp`)} }`;
    const limits = `checks: [ratelimit({ limit: 5, period: "1m", per: "conn" }),
      ratelimit({ limit: 100, period: "1h", per: "mail", store: "redis" })]`;
    const lookup = `relay: { domains: redisSet("relay_domains").hostList("name"), clients: [] }`;
    const redis = `redis: { servers: [{ url: "redis://127.0.0.1:9" }] }`;
    const imports = ["ratelimit", "redisSet"];
    const paths = await Promise.all([
      writeConfig(dir, `{ ${spool}, ${limits} }`, "limit.ts", imports),
      writeConfig(dir, `{ ${spool}, ${lookup} }`, "lookup.ts", imports),
      writeConfig(dir, `{ ${spool}, ${limits}, ${lookup}, ${redis} }`, "ok.ts", imports),
    ]);
    const [limit, lookupOnly, ok, started] = await Promise.all([
      ...paths.map((p) => runFerryCli(["--config", p, "--check-config"])),
      // Not only --check-config: starting with it refuses too, before anything opens.
      runFerryCli(["--config", paths[0]]),
    ]);
    const limitError =
      /^config: checks\[1\]: ratelimit store "redis" needs redis to be configured \(redis\.servers\)$/;
    assertConfigErrors(limit, [limitError]);
    assertConfigErrors(started, [limitError]);
    assertConfigErrors(lookupOnly, [
      /^config: relay\.domains: a Redis lookup needs redis to be configured \(redis\.servers\)$/,
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /configuration OK/);
    await assert.rejects(Deno.stat(`${dir}/sp`), Deno.errors.NotFound, "no spool was created");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the repository's own config.ts passes --check-config", async () => {
  const path = fromFileUrl(new URL("../../config.ts", import.meta.url));
  const r = await runFerryCli(["--config", path, "--check-config"]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /configuration OK/);
});

Deno.test("an unknown command-line argument exits 64 with the usage line", async () => {
  const r = await runFerryCli(["--frobnicate"]);
  assert.equal(r.code, 64);
  assert.match(r.stderr, /usage: ferry/);
});
