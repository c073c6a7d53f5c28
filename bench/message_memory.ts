/**
 * `deno task bench:memory [MB]`: the RSS a large message adds to a running Ferry on its way in (default one
 * 50 MB message; goal: peak added RSS < 2× its size). Ferry runs with delivery off; RSS is sampled from
 * /proc every 5 ms while the message is sent, and the peak over the idle baseline is printed.
 */

import { freePort, waitForBanner } from "./_postfix.ts";
import { terminate } from "./_process.ts";
import { repoRoot } from "./_ferry.ts";

const MB = 1024 * 1024;
// Just under the size: limits.messageSize (50 MB by default) counts the whole message.
const size = Number(Deno.args[0] ?? 50) * MB - 2 * MB;

function rss(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

const parent = await Deno.makeTempDir({ prefix: "ferry-bench-memory-" });
const port = freePort();
const child = new Deno.Command(Deno.execPath(), {
  args: ["run", "--allow-all", "mod.ts", "--config", "bench/ferry.config.ts"],
  cwd: repoRoot,
  env: { FERRY_PORT: String(port), FERRY_SPOOL: `${parent}/spool`, FERRY_LOG: `${parent}/ferry.log` },
  stdin: "null",
  stdout: "null",
  stderr: "inherit",
}).spawn();
const status = child.status;
try {
  await waitForBanner("127.0.0.1", port, 30_000);
  // A small message first, so the first-message costs (code paths, SQLite caches) are in the baseline.
  const line = "x".repeat(900) + "\r\n";
  const send = async (bytes: number, withSize = true) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const enc = new TextEncoder();
    const buf = new Uint8Array(4096);
    const read = async () => new TextDecoder().decode(buf.subarray(0, (await conn.read(buf)) ?? 0));
    await read();
    // SIZE as MTAs send it when it is advertised (Postfix, Exim): Ferry then takes the room at once.
    const mail = `MAIL FROM:<a@client.test>${withSize ? ` SIZE=${bytes + 64 * 1024}` : ""}`;
    for (const cmd of ["EHLO m.test", mail, "RCPT TO:<b@bench.test>", "DATA"]) {
      await conn.write(enc.encode(cmd + "\r\n"));
      await read();
    }
    const writeAll = async (data: Uint8Array) => {
      for (let off = 0; off < data.length;) off += await conn.write(data.subarray(off));
    };
    await writeAll(enc.encode("Subject: big\r\n\r\n"));
    const chunk = enc.encode(line.repeat(1024));
    for (let sent = 0; sent < bytes; sent += chunk.length) await writeAll(chunk);
    await writeAll(enc.encode(".\r\n"));
    const reply = await read();
    conn.close();
    return reply;
  };
  await send(MB);
  await new Promise((r) => setTimeout(r, 1000));
  const base = rss(child.pid);
  let peak = base;
  const sampler = setInterval(() => (peak = Math.max(peak, rss(child.pid))), 5);
  const reply = await send(size);
  await new Promise((r) => setTimeout(r, 200));
  clearInterval(sampler);
  console.log(
    `memory: one ${(size / MB).toFixed(1)} MB message: baseline RSS ${(base / MB).toFixed(0)} MB, peak ${
      (peak / MB).toFixed(0)
    } MB, added ${((peak - base) / MB).toFixed(0)} MB = ${((peak - base) / size).toFixed(2)}x its size ` +
      `(goal < 2x); reply ${reply.trim().slice(0, 40)}`,
  );
} finally {
  await terminate(child, status, 15_000);
  await Deno.remove(parent, { recursive: true }).catch(() => {});
}
