import assert from "node:assert/strict";
import { tlsAccept, TlsServerContext } from "../../src/tls/server_context.ts";
import { OcspStapler } from "../../src/tls/ocsp_stapler.ts";
import { makeOcspPki, type OcspIssued, type OcspPki } from "../helpers/ocsp_pki.ts";

/** Serves TLS on a loopback port with `cert` and its stapler until the returned stop() is called. */
function serveTls(cert: OcspIssued, stapler: OcspStapler): { port: number; stop(): Promise<void> } {
  const ctx = new TlsServerContext({
    certificates: [{ certFile: cert.chain, keyFile: cert.key, ocsp: () => stapler.current() }],
  });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const sessions: Promise<void>[] = [];
  const loop = (async () => {
    for await (const conn of listener) {
      sessions.push((async () => {
        try {
          const tls = await tlsAccept(conn, ctx, { timeout: 5000 });
          try {
            await tls.write(new TextEncoder().encode("220 ready\r\n"));
            const buf = new Uint8Array(1024);
            while (await tls.read(buf) !== null) { /* until the client leaves */ }
          } finally {
            tls.close();
          }
        } catch { /* a client hanging up mid-session is not this test's concern */ }
      })());
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    async stop() {
      listener.close();
      await loop.catch(() => {});
      await Promise.all(sessions);
      ctx.close();
    },
  };
}

/** Runs `openssl s_client -status` against the port with stdin closed and returns its output. */
async function sClientStatus(pki: OcspPki, port: number): Promise<string> {
  const out = await new Deno.Command("openssl", {
    args: [
      "s_client",
      "-connect",
      `127.0.0.1:${port}`,
      "-status",
      "-CAfile",
      pki.caCrt,
      "-servername",
      "mail.example.test",
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
}

Deno.test("openssl s_client -status sees the response the stapler serves, and none when it must not", async () => {
  const pki = await makeOcspPki();
  const leaf = await pki.issue("mail.example.test");
  const revoked = await pki.issue("revoked.example.test");
  await pki.revoke(revoked);
  const responder = await pki.startResponder();
  const staplers: OcspStapler[] = [];
  const servers: { stop(): Promise<void> }[] = [];
  const staple = async (cert: OcspIssued, opts: { file?: string; fetch?: boolean; now?: () => Date }) => {
    const stapler = new OcspStapler({ certFile: cert.chain, log: () => {}, ...opts });
    staplers.push(stapler);
    await stapler.start();
    if (opts.fetch) await stapler.refresh();
    const server = serveTls(cert, stapler);
    servers.push(server);
    return await sClientStatus(pki, server.port);
  };
  try {
    // fetch mode: fetched from the live responder named in the certificate's AIA
    const fetched = await staple(leaf, { fetch: true, file: `${pki.dir}/fetched.ocsp` });
    assert.match(fetched, /OCSP Response Status: successful/);
    assert.match(fetched, /Cert Status: good/);
    assert.match(fetched, /Verify return code: 0/);

    // file mode
    const file = `${pki.dir}/leaf.ocsp`;
    await Deno.writeFile(file, await pki.respond(leaf, { nmin: 1 }));
    const fromFile = await staple(leaf, { file });
    assert.match(fromFile, /Cert Status: good/);

    // the same file after its nextUpdate: nothing stapled
    const expired = await staple(leaf, { file, now: () => new Date(Date.now() + 2 * 60_000) });
    assert.match(expired, /OCSP response: no response sent/);
    assert.doesNotMatch(expired, /Cert Status/);

    // a revoked certificate: the responder says so and nothing is stapled
    const rev = await staple(revoked, { fetch: true });
    assert.match(rev, /OCSP response: no response sent/);
  } finally {
    for (const s of staplers) s.stop();
    for (const s of servers) await s.stop();
    await responder.stop();
    await pki.cleanup();
  }
});
