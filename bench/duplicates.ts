/**
 * `deno task bench:duplicates [N] [KILLS]`: delivery across kill -9. N messages (default 2,000), each with
 * a unique marker, are queued in Ferry with delivery off; Ferry is then started with delivery to a dumping
 * smtp-sink and killed with SIGKILL KILLS times (default 10), then left to finish. The kills are spread
 * uniformly over the delivery run, not over wall-clock time: kill k comes when the sink holds a random
 * number of messages in the k-th of KILLS equal slices of N (a fixed delay after start-up would land most
 * kills after everything was delivered on a fast machine, and measure the machine's speed, not Ferry).
 * A message counts as delivered twice only when the sink kept two complete transactions (smtp-sink drops
 * the capture of a transaction that never reached its final dot) for the same marker and the same
 * recipient. Prints how many were delivered more than once, the same per kill that hit a delivery in
 * progress, and how many never arrived (must be 0).
 */

import { freePort, waitForBanner } from "./_postfix.ts";
import { repoRoot } from "./_ferry.ts";

const N = Number(Deno.args[0] ?? 2000);
const KILLS = Number(Deno.args[1] ?? 10);
const parent = await Deno.makeTempDir({ prefix: "ferry-bench-dup-" });
await Deno.chmod(parent, 0o777);
const sinkDir = `${parent}/sink`;
await Deno.mkdir(sinkDir);
await Deno.chmod(sinkDir, 0o777);
const sinkPort = freePort();
const sink = new Deno.Command("/usr/sbin/smtp-sink", {
  args: ["-u", "nobody", "-d", `${sinkDir}/%M.`, `127.0.0.1:${sinkPort}`, "100"],
  stdin: "null",
  stdout: "null",
  stderr: "null",
}).spawn();
const spool = `${parent}/spool`;
const port = freePort();

function ferry(deliver: boolean): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "mod.ts", "--config", "bench/ferry.config.ts"],
    cwd: repoRoot,
    env: {
      FERRY_PORT: String(port),
      FERRY_SPOOL: spool,
      FERRY_LOG: `${parent}/ferry.log`,
      ...(deliver ? { FERRY_DELIVER_TO: `127.0.0.1:${sinkPort}` } : {}),
    },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

/** Transactions the sink holds (complete ones, and at most one in progress per connection). */
async function sinkFiles(): Promise<number> {
  let n = 0;
  for await (const _ of Deno.readDir(sinkDir)) n++;
  return n;
}

const enc = new TextEncoder();
async function sendAll(): Promise<void> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const buf = new Uint8Array(65536);
  const read = async () => new TextDecoder().decode(buf.subarray(0, (await conn.read(buf)) ?? 0));
  const cmd = async (line: string) => {
    await conn.write(enc.encode(line + "\r\n"));
    let r = await read();
    while (!/^\d{3} /m.test(r)) r += await read();
    return r;
  };
  await read();
  await cmd("EHLO dup.test");
  for (let i = 0; i < N; i++) {
    await cmd("MAIL FROM:<a@client.test>");
    await cmd("RCPT TO:<b@bench.test>");
    await cmd("DATA");
    const r = await cmd(`Subject: marker-${i}-end\r\n\r\nbody ${i}\r\n.`);
    if (!r.startsWith("250")) throw new Error(`message ${i}: ${r}`);
  }
  await cmd("QUIT");
  conn.close();
}

try {
  await waitForBanner("127.0.0.1", sinkPort, 10_000);
  let child = ferry(false);
  await waitForBanner("127.0.0.1", port, 30_000);
  await sendAll();
  child.kill("SIGTERM");
  await child.status;
  let inFlight = 0;
  for (let k = 0; k < KILLS; k++) {
    child = ferry(true);
    await waitForBanner("127.0.0.1", port, 30_000);
    // Stratified: one kill in each of KILLS equal slices of the run, at a uniform point inside it.
    const target = Math.floor(N * (k + Math.random()) / KILLS);
    const deadline = Date.now() + 120_000;
    let files = await sinkFiles();
    while (files < Math.min(target, N) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
      files = await sinkFiles();
    }
    child.kill("SIGKILL");
    await child.status;
    // A kill after the last delivery says nothing about the window: counted apart.
    if (files < N) inFlight++;
  }
  child = ferry(true);
  await waitForBanner("127.0.0.1", port, 30_000);
  // Deliveries per marker and recipient (X-Rcpt-Args: one line per recipient of the captured transaction).
  const seen = new Map<string, number>();
  const markers = new Set<string>();
  const count = async () => {
    seen.clear();
    markers.clear();
    for await (const e of Deno.readDir(sinkDir)) {
      const text = await Deno.readTextFile(`${sinkDir}/${e.name}`).catch(() => "");
      const m = /marker-(\d+)-end/.exec(text);
      if (!m) continue;
      markers.add(m[1]);
      for (const r of text.matchAll(/^X-Rcpt-Args: <([^>]*)>/gm)) {
        const key = `${m[1]} ${r[1].toLowerCase()}`;
        seen.set(key, (seen.get(key) ?? 0) + 1);
      }
    }
  };
  const end = Date.now() + 300_000;
  while (Date.now() < end) {
    await count();
    if (markers.size >= N) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  await new Promise((r) => setTimeout(r, 2000));
  await count();
  child.kill("SIGTERM");
  await child.status;
  const twice = [...seen.values()].filter((n) => n > 1).length;
  const perKill = inFlight > 0 ? (twice / inFlight).toFixed(1) : "-";
  console.log(
    `duplicates: ${N} messages, ${KILLS} x kill -9 spread over the delivery run (${inFlight} while delivering): ` +
      `${twice} delivered more than once (${(twice / N * 100).toFixed(2)} %, ${perKill} per kill), ` +
      `${N - markers.size} never delivered`,
  );
} finally {
  try {
    sink.kill("SIGTERM");
  } catch { /* gone */ }
  await sink.status;
  await Deno.remove(parent, { recursive: true }).catch(() => {});
}
