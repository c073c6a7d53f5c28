/**
 * Memory benchmark of the TLS engine: N full handshakes (this engine's client against its server, with the
 * client's PKIX and RFC 6125 checks) over an in-memory pipe, then a short exchange and close on both sides.
 * Prints RSS at five checkpoints (growth that keeps climbing is a leak; growth that levels off is cache or
 * heap sizing), then RSS before/after against the target (< 10 MB for 10,000 handshakes), split into the V8
 * heap and everything else (OpenSSL, malloc arenas, code).
 * Run: deno run --allow-all --v8-flags=--expose-gc bench/tls_handshakes.ts [count] [--tls1.2]
 * Optional: add --max-semi-space-size=1 to the V8 flags to pin V8's young generation. V8 grows it (up to
 * 64 MB here) in proportion to how much garbage a program makes, whatever makes it; pinning it shows what
 * the TLS engine itself keeps.
 */

import v8 from "node:v8";
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

const args = Deno.args.filter((a) => !a.startsWith("--"));
const count = Number(args[0] ?? 10_000);
const tls12 = Deno.args.includes("--tls1.2");
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.log("warning: run with --v8-flags=--expose-gc, or garbage not yet collected counts as growth");
}

interface Sample {
  rss: number;
  heapTotal: number;
  youngGen: number;
}
const sample = (): Sample => {
  gc?.();
  gc?.(); // the second pass lets V8 free the ArrayBuffer backing stores the first one found dead
  const m = Deno.memoryUsage();
  const young = v8.getHeapSpaceStatistics().find((s) => s.space_name === "new_space")?.space_size ?? 0;
  return { rss: m.rss, heapTotal: m.heapTotal, youngGen: young };
};
const mb = (n: number) => (n / 1048576).toFixed(1) + " MB";

loadOpenSsl();
const pki = await createPki();
try {
  const leaf = await pki.issue({ cn: "bench.test", dns: ["bench.test"] });
  const server = new TlsServerContext({
    certificates: [{ certFile: leaf.chainFile, keyFile: leaf.keyFile }],
    maxVersion: tls12 ? "TLS1.2" : "TLS1.3",
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
  const before = sample();
  const t0 = performance.now();
  const step = Math.max(1, Math.floor(count / 5));
  for (let i = 1; i <= count; i++) {
    await once();
    if (i % step === 0) console.log(`  after ${i}: rss ${mb(sample().rss)}`);
  }
  const secs = (performance.now() - t0) / 1000;
  const after = sample();
  const growth = after.rss - before.rss;
  console.log(
    `handshakes: ${count} (${tls12 ? "TLS 1.2" : "TLS 1.3"}) in ${secs.toFixed(1)} s ` +
      `(${(count / secs).toFixed(0)}/s, client+server)`,
  );
  console.log(
    `rss before: ${mb(before.rss)}  after: ${mb(after.rss)}  growth: ${mb(growth)}  (target < 10 MB: ${
      growth < 10 * 1048576 ? "met" : "NOT met"
    })`,
  );
  console.log(
    `  of which V8 heap: ${mb(after.heapTotal - before.heapTotal)} (young generation ${
      mb(before.youngGen)
    } → ${mb(after.youngGen)}); outside the V8 heap: ${mb(growth - (after.heapTotal - before.heapTotal))}`,
  );
  server.close();
  client.close();
} finally {
  await pki.cleanup();
}
