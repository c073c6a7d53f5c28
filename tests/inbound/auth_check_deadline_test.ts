/**
 * `auth.check` runs under `limits.policyTimeout` like every other function the config supplies: one that never
 * answers (a hung directory lookup) gets its signal aborted and the client 454 4.7.0, and the session goes on.
 * Before, the AUTH command waited for ever and the connection was held open.
 */

import assert from "node:assert/strict";
import { startTestFerry } from "../helpers/ferry.ts";
import { createPki, ferryTls } from "../helpers/pki.ts";
import { loadOpenSsl } from "../../src/tls/mod.ts";

loadOpenSsl();

const enc = new TextEncoder();
const dec = new TextDecoder();
const plain = (user: string, password: string) => enc.encode(`\0${user}\0${password}`).toBase64();

Deno.test("auth.check that never answers: 454 4.7.0 after limits.policyTimeout, its signal aborted, session goes on", async () => {
  const pki = await createPki();
  const leaf = await pki.issue({ cn: "ferry.test", dns: ["ferry.test"], ips: ["127.0.0.1"] });
  let aborted: unknown;
  const f = await startTestFerry({
    listen: [{ address: "127.0.0.1", port: 0, mode: "smtps" }],
    tls: ferryTls(leaf),
    limits: { policyTimeout: "300ms" },
    auth: {
      check: (req: { user: string; password: string }, opts?: { signal: AbortSignal }) => {
        if (req.user === "hang") {
          return new Promise<boolean>(() => {
            opts?.signal.addEventListener("abort", () => (aborted = opts.signal.reason));
          });
        }
        return req.user === "carol" && req.password === "pw";
      },
    },
  });
  const tls = await Deno.connectTls({
    hostname: "127.0.0.1",
    port: f.port,
    caCerts: [await Deno.readTextFile(pki.certFile)],
  });
  // Without the deadline the AUTH reply never came: give up after 10 s so that the test fails, not hangs.
  const guard = setTimeout(() => tls.close(), 10_000);
  try {
    let buf = "";
    const chunk = new Uint8Array(4096);
    /** The next complete reply's last line. */
    const reply = async () => {
      for (;;) {
        const m = /^(?:\d{3}-[^\n]*\n)*(\d{3} [^\n]*)\r\n/.exec(buf);
        if (m) {
          buf = buf.slice(m[0].length);
          return m[1];
        }
        const n = await tls.read(chunk);
        if (n === null) return "EOF";
        buf += dec.decode(chunk.subarray(0, n));
      }
    };
    const cmd = async (line: string) => {
      await tls.write(enc.encode(line + "\r\n"));
      return await reply();
    };
    assert.match(await reply(), /^220 /);
    assert.match(await cmd("EHLO client.test"), /^250 /);
    const started = performance.now();
    assert.equal(await cmd(`AUTH PLAIN ${plain("hang", "x")}`), "454 4.7.0 Temporary authentication failure");
    assert.ok(performance.now() - started < 10_000);
    assert.match(String(aborted), /auth\.check did not answer within 300 ms/);
    assert.ok(f.memlog.has("auth.check did not answer within 300 ms"), JSON.stringify(f.memlog.lines));
    assert.equal(await cmd(`AUTH PLAIN ${plain("carol", "pw")}`), "235 2.7.0 Authentication successful");
    await cmd("QUIT");
  } finally {
    clearTimeout(guard);
    try {
      tls.close();
    } catch { /* closed by the guard */ }
    await f.stop();
    await Deno.remove(f.dir, { recursive: true }).catch(() => {});
    await pki.cleanup();
  }
});
