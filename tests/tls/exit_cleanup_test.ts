/**
 * OpenSSL's atexit cleanup is off once Ferry loads the library: `OPENSSL_cleanup()` would run at exit() while
 * other threads (test modules of `deno test --parallel`, finishing their TLS work) still run OpenSSL's
 * thread-exit cleanup, which once aborted a full test run with "double free or corruption (fasttop)".
 * Observed through OPENSSL_atexit(): handlers registered there run only from OPENSSL_cleanup(), so a child
 * that registers libc's abort() exits 0 when the cleanup is off and dies of SIGABRT when it runs.
 */

import assert from "node:assert/strict";

const FFI_URL = new URL("../../src/tls/_ffi.ts", import.meta.url).href;

const CHILD = (withFerry: boolean) => `
${withFerry ? `import { NativeContext } from ${JSON.stringify(FFI_URL)};` : ""}
const libc = Deno.dlopen("libc.so.6", { dlsym: { parameters: ["pointer", "buffer"], result: "pointer" } });
const abortFn = libc.symbols.dlsym(null, new TextEncoder().encode("abort\\0"));
if (abortFn === null) Deno.exit(3);
${
  withFerry
    ? "new NativeContext().free(); // Ferry's way in: its lib() opens OpenSSL"
    : `const ssl = Deno.dlopen("libssl.so.3", {
  TLS_method: { parameters: [], result: "pointer" },
  SSL_CTX_new: { parameters: ["pointer"], result: "pointer" },
  SSL_CTX_free: { parameters: ["pointer"], result: "void" },
}).symbols;
ssl.SSL_CTX_free(ssl.SSL_CTX_new(ssl.TLS_method()));`
}
const crypto = Deno.dlopen("libcrypto.so.3", { OPENSSL_atexit: { parameters: ["pointer"], result: "i32" } }).symbols;
if (crypto.OPENSSL_atexit(abortFn) !== 1) Deno.exit(4);
`;

async function runChild(withFerry: boolean): Promise<Deno.CommandOutput> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-ossl-exit-" });
  try {
    const file = `${dir}/child.ts`;
    await Deno.writeTextFile(file, CHILD(withFerry));
    return await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-all", file],
      cwd: dir, // where a core dump of the aborting child goes, if the machine keeps them: removed below
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("OpenSSL's exit-time cleanup runs without Ferry's init (the probe works) and not once Ferry loaded OpenSSL", async () => {
  const plain = await runChild(false);
  assert.equal(
    plain.signal,
    "SIGABRT",
    `without Ferry's init: code ${plain.code} ${new TextDecoder().decode(plain.stderr)}`,
  );
  const ferry = await runChild(true);
  assert.equal(ferry.code, 0, new TextDecoder().decode(ferry.stderr));
  assert.equal(ferry.signal, null);
});
