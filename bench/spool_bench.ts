/**
 * Spool store throughput: 5,000 stores of 10 KiB from 50 concurrent callers, for each engine placement
 * (worker / main thread) and batching setting, plus the worst event-loop stall seen meanwhile.
 * Run: deno run --allow-all bench/spool_bench.ts [messages] [concurrency]
 */

import { SqliteSpool, type SqliteSpoolOptions } from "../src/spool/sqlite_spool.ts";
import type { Envelope } from "../src/core/envelope.ts";

const total = Number(Deno.args[0] ?? 5000);
const concurrency = Number(Deno.args[1] ?? 50);
const data = new Uint8Array(10 * 1024).map((_, i) => 32 + (i % 90));

function envelope(id: string): Envelope {
  return {
    id,
    sender: "sender@example.org",
    recipients: [{ address: "rcpt@example.com", status: "pending" }],
    size: data.length,
    receivedAt: Date.now(),
    protocol: "esmtp",
    client: { ip: "127.0.0.1", port: 25000 },
    receivedBy: "bench.local",
  };
}

const channel = new MessageChannel();
const waiting: (() => void)[] = [];
channel.port2.onmessage = () => waiting.shift()?.();

/** Resolves in a later macrotask (like a socket read completing), without timer clamping. */
function arrival(): Promise<void> {
  return new Promise((resolve) => {
    waiting.push(resolve);
    channel.port1.postMessage(0);
  });
}

async function run(label: string, options: Omit<SqliteSpoolOptions, "dir">): Promise<number> {
  const dir = await Deno.makeTempDir({ prefix: "ferry-spool-bench-" });
  const spool = new SqliteSpool({ dir, ...options });
  await spool.open();
  // A 1 ms ticker stands for the rest of the server: its worst gap is how long sessions would stall.
  let maxLag = 0;
  let last = performance.now();
  const ticker = setInterval(() => {
    const now = performance.now();
    maxLag = Math.max(maxLag, now - last);
    last = now;
  }, 1);
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < total) {
      next++;
      // Data arrives from a socket: each store starts in its own macrotask, as in the server.
      await arrival();
      const id = spool.newId();
      await spool.store(envelope(id), data);
    }
  }));
  const seconds = (performance.now() - started) / 1000;
  maxLag = Math.max(maxLag, performance.now() - last);
  clearInterval(ticker);
  const stored = await spool.count();
  const { commits, writes } = spool.stats;
  await spool.close();
  await Deno.remove(dir, { recursive: true });
  const rate = total / seconds;
  console.log(
    `${label.padEnd(34)} ${rate.toFixed(0).padStart(7)} msg/s  (${stored} stored, ${
      (writes / commits).toFixed(1)
    } per commit, worst event-loop stall ${maxLag.toFixed(1)} ms)`,
  );
  return rate;
}

console.log(
  `spool bench: ${total} x ${data.length} B, ${concurrency} concurrent callers, WAL synchronous=FULL`,
);
const single = await run("main thread, one per commit", { thread: "main", maxBatch: 1 });
await run("main thread, group commit (0 ms)", { thread: "main" });
await run("main thread, group commit (2 ms)", { thread: "main", batchWindowMs: 2 });
await run("worker, one per commit", { thread: "worker", maxBatch: 1 });
const chosen = await run("worker, group commit (0 ms) [default]", { thread: "worker" });
await run("worker, group commit (2 ms)", { thread: "worker", batchWindowMs: 2 });
console.log(`default vs one per commit: ${(chosen / single).toFixed(1)}x`);
channel.port1.close();
channel.port2.close();
