/** Problems found only when starting (files, libraries, directories) still exit 78 naming the option. */
import assert from "node:assert/strict";
import { runFerryCli, writeConfig } from "../helpers/process.ts";

const cases: [string, string, RegExp][] = [
  [
    "an unusable spool directory",
    `{ listen: [{ port: 0 }], spool: { dir: "/proc/ferry-no-such/spool" }, delivery: { enable: false } }`,
    /^config: spool\.dir: cannot open "\/proc\/ferry-no-such\/spool": /m,
  ],
  [
    "a TLS library that cannot be loaded",
    `{ listen: [{ port: 0 }], delivery: { enable: false }, tls: { certificates: [{ cert: "CERT", key: "KEY" }],
       library: { ssl: "/nonexistent/libssl.so", crypto: "/nonexistent/libcrypto.so" } } }`,
    /^config: tls\.library: cannot load /m,
  ],
  [
    "a TLS library that cannot be loaded and no server certificates (outbound TLS uses it too)",
    `{ listen: [{ port: 0 }], delivery: { enable: false },
       tls: { library: { ssl: "/nonexistent/libssl.so", crypto: "/nonexistent/libcrypto.so" } } }`,
    /^config: tls\.library: cannot load /m,
  ],
  [
    "a key file that does not exist",
    `{ listen: [{ port: 0 }], delivery: { enable: false }, tls: { certificates: [{ cert: "CERT", key: "/nonexistent/ferry.key" }] } }`,
    /^config: tls\.certificates\[0\]\.key: .*\/nonexistent\/ferry\.key/m,
  ],
  [
    "a certificate set without its key",
    `{ listen: [{ port: 0 }], delivery: { enable: false }, tls: { certificates: [{ cert: "CERT" }] } }`,
    /^config: tls\.certificates\[0\]\.key: expected the path of a PEM private key file$/m,
  ],
];

for (const [what, literal, expected] of cases) {
  Deno.test(`start-up with ${what} exits 78 with one line naming the option`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "ferry-cfg-" });
    try {
      const cert = `${dir}/cert.pem`, key = `${dir}/key.pem`;
      const gen = await new Deno.Command("openssl", {
        args: [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:P-256",
          "-nodes",
          "-keyout",
          key,
          "-out",
          cert,
          "-days",
          "2",
          "-subj",
          "/CN=t",
        ],
        stdout: "null",
        stderr: "null",
      }).output();
      assert.equal(gen.code, 0);
      const path = await writeConfig(dir, literal.replace("CERT", cert).replace("KEY", key));
      const r = await runFerryCli(["--config", path]);
      assert.equal(r.code, 78, r.stderr);
      assert.match(r.stderr, expected);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      assert.doesNotMatch(r.stderr, /^\s+at /m);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
