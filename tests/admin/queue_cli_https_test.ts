/**
 * `deno task queue` against an admin listener on HTTPS: the URL from the spool's admin.url, the configured
 * token passed with --token, the issuing CA with --ca; without that CA the certificate is not trusted and the
 * command says it got no answer (exit 69) instead of falling back to anything.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { startAdminFerry, stopFerry } from "./_admin.ts";
import { createPki } from "../helpers/pki.ts";
import { FerryProcess, REPO_DIR, sendMessage } from "../helpers/process.ts";

const CLI = fileURLToPath(new URL("../../src/queue_cli.ts", import.meta.url));

async function queue(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", CLI, ...args],
    cwd: REPO_DIR,
    env: { FERRY_ADMIN_URL: "", FERRY_ADMIN_TOKEN: "", FERRY_ADMIN_CA: "" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, out: dec.decode(out.stdout), err: dec.decode(out.stderr) };
}

Deno.test("the queue command reaches an HTTPS admin listener through admin.url with --token and --ca", async () => {
  const pki = await createPki();
  const cert = await pki.issue({ cn: "ferry admin", ips: ["127.0.0.1"] });
  const token = "https-token-0123456789";
  const f = await startAdminFerry({
    admin: { listen: "127.0.0.1:0", tokens: [token], tls: { cert: cert.chainFile, key: cert.keyFile } },
  });
  try {
    const spool = `${f.dir}/spool`;
    assert.equal((await Deno.readTextFile(`${spool}/admin.url`)).trim(), f.base);
    assert.match(f.base, /^https:\/\/127\.0\.0\.1:\d+$/);

    const ok = await queue(["--spool", spool, "--token", token, "--ca", pki.certFile, "--json", "summary"]);
    assert.equal(ok.code, 0, ok.err);
    assert.equal(JSON.parse(ok.out).byState.hold, 0);

    // A configured token is not in the spool directory: without --token the command cannot know it.
    const noToken = await queue(["--spool", spool, "--ca", pki.certFile, "summary"]);
    assert.equal(noToken.code, 69);
    assert.match(noToken.err, /no admin token: none in .*\/spool\/admin\.token; pass --token/);

    const untrusted = await queue(["--spool", spool, "--token", token, "summary"]);
    assert.equal(untrusted.code, 69);
    assert.match(untrusted.err, /no answer from the admin API at https:\/\/127\.0\.0\.1:\d+: /);
  } finally {
    await stopFerry(f);
    await pki.cleanup();
  }
});

/** `openssl req -x509` as an operator runs it: `<dir>/<name>.pem` and `.key`, for IP 127.0.0.1. */
async function selfSigned(dir: string, name: string): Promise<void> {
  const made = await new Deno.Command("openssl", {
    args: [
      ...["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"],
      ...["-keyout", `${dir}/${name}.key`, "-out", `${dir}/${name}.pem`],
      ...["-subj", "/CN=ferry admin", "-addext", "subjectAltName=IP:127.0.0.1"],
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(made.code, 0, new TextDecoder().decode(made.stderr));
}

Deno.test("the queue command trusts a self-signed admin.tls.cert made by `openssl req -x509` (CA:TRUE) by default", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-admin-selfsigned-" });
  let ferry: FerryProcess | undefined;
  try {
    // What an operator types: a self-signed certificate for the address the admin listener binds.
    await selfSigned(dir, "admin");
    const text = await new Deno.Command("openssl", { args: ["x509", "-in", `${dir}/admin.pem`, "-text"] })
      .output();
    assert.match(
      new TextDecoder().decode(text.stdout),
      /CA:TRUE/,
      "a CA certificate too, as openssl makes it",
    );
    const token = "selfsigned-token-0123456789";
    const [cert, key] = [`${dir}/admin.pem`, `${dir}/admin.key`].map((f) => JSON.stringify(f));
    ferry = await FerryProcess.start({
      dir,
      set: {
        admin: `{ listen: "127.0.0.1:0", tokens: [${
          JSON.stringify(token)
        }], tls: { cert: ${cert}, key: ${key} } }`,
      },
    });
    assert.match(await Deno.readTextFile(`${dir}/spool/admin.url`), /^https:\/\/127\.0\.0\.1:\d+\n$/);
    // No --ca and no --token: admin.tls.cert and admin.tokens[0] from the config.
    const ok = await queue(["--config", ferry.configPath, "--json", "summary"]);
    assert.equal(ok.code, 0, ok.err);
    assert.equal(JSON.parse(ok.out).byState.hold, 0);
    const id = await sendMessage(ferry.port);
    const held = await queue(["--config", ferry.configPath, "hold", id]);
    assert.equal(held.code, 0, held.err);
    assert.equal(held.out.trim(), `${id}: held`);

    // Another self-signed certificate named as the CA: refused, and the command says why.
    await selfSigned(dir, "other");
    const other = await queue(["--config", ferry.configPath, "--ca", `${dir}/other.pem`, "summary"]);
    assert.equal(other.code, 69);
    assert.match(other.err, /no answer from the admin API at https:.*Server certificate rejected/);
  } finally {
    await ferry?.stop();
    await ferry?.cleanup();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
