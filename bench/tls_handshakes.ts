/**
 * Memory benchmark of the TLS engine: N full handshakes (this engine's client against its server) over an
 * in-memory pipe, then a short exchange and close on both sides; prints RSS before/after and the growth.
 * Run: deno run --allow-all --v8-flags=--expose-gc bench/tls_handshakes.ts [count]
 * (add --max-semi-space-size=1 to the v8 flags to keep V8's young generation from growing, which otherwise
 * shows up as ~50 MB of RSS that is V8 heap sizing, not OpenSSL memory)
 */

import type { ByteStream } from "../src/core/stream.ts";
import { loadOpenSsl, tlsAccept, TlsClientContext, tlsConnect, TlsServerContext } from "../src/tls/mod.ts";
import { createPki } from "../tests/helpers/pki.ts";

/** One direction of an in-memory pipe. */
class Channel {
  #chunks: Uint8Array[] = [];
  #waiter: (() => void) | undefined;
  #closed = false;
  push(p: Uint8Array) {
    this.#chunks.push(p.slice());
    this.#waiter?.();
  }
  end() {
    this.#closed = true;
    this.#waiter?.();
  }
  async pull(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#closed) return null;
      await new Promise<void>((r) => this.#waiter = r);
      this.#waiter = undefined;
    }
    const c = this.#chunks[0];
    const n = Math.min(c.length, p.length);
    p.set(c.subarray(0, n));
    if (n === c.length) this.#chunks.shift();
    else this.#chunks[0] = c.subarray(n);
    return n;
  }
}

function pipe(): [ByteStream, ByteStream] {
  const ab = new Channel(), ba = new Channel();
  const end = (mine: Channel, theirs: Channel): ByteStream => ({
    read: (p) => mine.pull(p),
    write: (p) => (theirs.push(p), Promise.resolve(p.length)),
    close: () => {
      theirs.end();
      mine.end();
    },
  });
  return [end(ab, ba), end(ba, ab)];
}

const count = Number(Deno.args[0] ?? 10_000);
const gc = (globalThis as { gc?: () => void }).gc;
const rss = () => {
  gc?.();
  return Deno.memoryUsage().rss;
};
const mb = (n: number) => (n / 1048576).toFixed(1) + " MB";

loadOpenSsl();
const pki = await createPki();
try {
  const leaf = await pki.issue({ cn: "bench.test", dns: ["bench.test"] });
  const server = new TlsServerContext({
    certificates: [{ certFile: leaf.chainFile, keyFile: leaf.keyFile }],
  });
  const client = new TlsClientContext({ caFile: pki.certFile });
  const msg = new TextEncoder().encode("EHLO bench\r\n");
  const buf = new Uint8Array(64);
  const once = async () => {
    const [a, b] = pipe();
    const [s, c] = await Promise.all([
      tlsAccept(a, server),
      tlsConnect(b, { context: client, serverName: "bench.test" }),
    ]);
    await c.write(msg);
    await s.read(buf);
    c.close();
    s.close();
    await Promise.all([c.closed, s.closed]);
  };
  for (let i = 0; i < 300; i++) await once(); // warm-up: JIT, OpenSSL tables, session caches
  const heap0 = Deno.memoryUsage().heapUsed;
  const before = rss();
  const t0 = performance.now();
  for (let i = 1; i <= count; i++) {
    await once();
    if (i % (count / 5) === 0) console.log(`  after ${i}: rss ${mb(rss())}`);
  }
  const secs = (performance.now() - t0) / 1000;
  const after = rss();
  const heap1 = Deno.memoryUsage().heapUsed;
  console.log(`handshakes: ${count} in ${secs.toFixed(1)} s (${(count / secs).toFixed(0)}/s, client+server)`);
  console.log(
    `rss before: ${mb(before)}  after: ${mb(after)}  growth: ${mb(after - before)}  (target < 10 MB)`,
  );
  console.log(
    `JS heap used before: ${mb(heap0)}  after: ${mb(heap1)}  heap total after: ${
      mb(Deno.memoryUsage().heapTotal)
    }`,
  );
  server.close();
  client.close();
} finally {
  await pki.cleanup();
}
