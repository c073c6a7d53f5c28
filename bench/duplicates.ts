/**
 * `deno task bench:duplicates [N] [KILLS]`: delivery across kill -9. N messages (default 2,000), each with
 * a unique marker, are queued in Ferry with delivery off; Ferry is then started with delivery to a dumping
 * smtp-sink and killed with SIGKILL every 300–800 ms while it delivers (KILLS times, default 10), then left
 * to finish. Prints how many markers the sink saw more than once (delivered twice) and how many never
 * arrived (must be 0).
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
  for (let k = 0; k < KILLS; k++) {
    child = ferry(true);
    await waitForBanner("127.0.0.1", port, 30_000);
    await new Promise((r) => setTimeout(r, 300 + Math.random() * 500));
    child.kill("SIGKILL");
    await child.status;
  }
  child = ferry(true);
  await waitForBanner("127.0.0.1", port, 30_000);
  const seen = new Map<string, number>();
  const count = async () => {
    seen.clear();
    for await (const e of Deno.readDir(sinkDir)) {
      const text = await Deno.readTextFile(`${sinkDir}/${e.name}`).catch(() => "");
      const m = /marker-(\d+)-end/.exec(text);
      if (m) seen.set(m[1], (seen.get(m[1]) ?? 0) + 1);
    }
  };
  const end = Date.now() + 300_000;
  while (Date.now() < end) {
    await count();
    if (seen.size >= N) break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  await new Promise((r) => setTimeout(r, 2000));
  await count();
  child.kill("SIGTERM");
  await child.status;
  const twice = [...seen.values()].filter((n) => n > 1).length;
  console.log(
    `duplicates: ${N} messages, ${KILLS} x kill -9 during delivery: ${twice} delivered more than once ` +
      `(${(twice / N * 100).toFixed(2)} %), ${N - seen.size} never delivered`,
  );
} finally {
  try {
    sink.kill("SIGTERM");
  } catch { /* gone */ }
  await sink.status;
  await Deno.remove(parent, { recursive: true }).catch(() => {});
}
