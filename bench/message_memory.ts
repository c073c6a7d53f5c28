/**
 * `deno task bench:memory [MB]`: the RSS large messages add to a running Ferry, on the way in and on the
 * way out (goal: peak added RSS < 2× the message data in flight). Four figures, each the peak over the
 * idle baseline taken just before, with RSS sampled from /proc every 5 ms:
 * - in: one message of MB (default 48, just under the default 50 MB limit), then 20 concurrent 10 MB
 *   messages, to a Ferry with delivery off; each is put on hold with the queue command once stored;
 * - out: a second Ferry on the same spool delivers to a live `smtp-sink`; a small message is released
 *   first (first-delivery costs go into the baseline), then the large one, then the 20 at once.
 */

import { freePort, waitForBanner } from "./_postfix.ts";
import { terminate } from "./_process.ts";
import { repoRoot } from "./_ferry.ts";
import { startCountingSink } from "./_sink.ts";

const MB = 1024 * 1024;
// Just under the size: limits.messageSize (50 MB by default) counts the whole message.
const size = Number(Deno.args[0] ?? 50) * MB - 2 * MB;
const concurrent = 20;
const each = 10 * MB;

function rss(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

const parent = await Deno.makeTempDir({ prefix: "ferry-bench-memory-" });
const spoolDir = `${parent}/spool`;

function startFerry(port: number, deliverTo?: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "mod.ts", "--config", "bench/ferry.config.ts"],
    cwd: repoRoot,
    env: {
      FERRY_PORT: String(port),
      FERRY_SPOOL: spoolDir,
      FERRY_LOG: `${parent}/ferry.log`,
      ...(deliverTo ? { FERRY_DELIVER_TO: deliverTo } : {}),
    },
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  return { child, status: child.status };
}

/** Runs the queue command against the running Ferry; returns its JSON answer. */
async function queue(...args: string[]): Promise<unknown> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "src/queue_cli.ts", "--spool", spoolDir, "--json", ...args],
    cwd: repoRoot,
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`queue ${args.join(" ")} failed`);
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

/** Sends one message of about `bytes` octets (announced with SIZE, as MTAs do); resolves to the reply. */
async function send(port: number, bytes: number): Promise<string> {
  const line = "x".repeat(900) + "\r\n";
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const enc = new TextEncoder();
  const buf = new Uint8Array(4096);
  const read = async () => new TextDecoder().decode(buf.subarray(0, (await conn.read(buf)) ?? 0));
  await read();
  for (
    const cmd of [
      "EHLO m.test",
      `MAIL FROM:<a@client.test> SIZE=${bytes + 64 * 1024}`,
      "RCPT TO:<b@bench.test>",
      "DATA",
    ]
  ) {
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
}

/** Peak RSS added over the baseline while `work` runs (and 200 ms after, for what it leaves to free). */
async function peakDuring(
  pid: number,
  work: () => Promise<unknown>,
): Promise<{ base: number; added: number }> {
  await new Promise((r) => setTimeout(r, 1000));
  const base = rss(pid);
  let peak = base;
  const sampler = setInterval(() => (peak = Math.max(peak, rss(pid))), 5);
  try {
    await work();
    await new Promise((r) => setTimeout(r, 200));
  } finally {
    clearInterval(sampler);
  }
  return { base, added: peak - base };
}

type Row = { id: string; size: number; state: string };
/** Every queued message (the queue command's JSON: the admin API's `{ messages }`). */
const ids = async () => {
  const out = (await queue("list", "--limit", "1000")) as Row[] | { messages: Row[] };
  return Array.isArray(out) ? out : out.messages;
};

const lines: string[] = [];
const report = (what: string, data: number, r: { base: number; added: number }) => {
  const line =
    `memory: ${what}: baseline RSS ${(r.base / MB).toFixed(0)} MB, added ${(r.added / MB).toFixed(0)} MB` +
    ` = ${(r.added / data).toFixed(2)}x the data (goal < 2x)`;
  lines.push(line);
  console.log(line);
};

try {
  // Way in: delivery off.
  const port = freePort();
  const a = startFerry(port);
  try {
    await waitForBanner("127.0.0.1", port, 30_000);
    // A small message first, so the first-message costs (code paths, SQLite caches) are in the baseline.
    await send(port, MB);
    const one = await peakDuring(a.child.pid, async () => {
      const reply = await send(port, size);
      if (!reply.startsWith("250")) throw new Error(`large message refused: ${reply.trim()}`);
    });
    report(`in, one ${(size / MB).toFixed(0)} MB message`, size, one);
    const many = await peakDuring(a.child.pid, async () => {
      const replies = await Promise.all(Array.from({ length: concurrent }, () => send(port, each)));
      const refused = replies.filter((r) => !r.startsWith("250"));
      if (refused.length) throw new Error(`${refused.length} refused: ${refused[0].trim()}`);
    });
    report(`in, ${concurrent} concurrent ${each / MB} MB messages`, concurrent * each, many);
    // Parked, so the delivering Ferry takes them one step at a time.
    await queue("hold", ...(await ids()).map((r) => r.id));
  } finally {
    await terminate(a.child, a.status, 15_000);
  }

  // Way out: delivery on, to a live smtp-sink.
  const sink = await startCountingSink();
  const port2 = freePort();
  const b = startFerry(port2, `${sink.host}:${sink.port}`);
  try {
    await waitForBanner("127.0.0.1", port2, 30_000);
    const rows = await ids();
    const small = rows.filter((r) => r.size < 2 * MB).map((r) => r.id);
    const large = rows.filter((r) => r.size > 20 * MB).map((r) => r.id);
    const ten = rows.filter((r) => r.size >= 2 * MB && r.size <= 20 * MB).map((r) => r.id);
    await queue("release", ...small);
    if (!(await sink.waitFor(1, 60_000))) throw new Error("the small message was not delivered");
    const one = await peakDuring(b.child.pid, async () => {
      await queue("release", ...large);
      if (!(await sink.waitFor(2, 120_000))) throw new Error("the large message was not delivered");
    });
    report(`out, one ${(size / MB).toFixed(0)} MB message to smtp-sink`, size, one);
    const many = await peakDuring(b.child.pid, async () => {
      await queue("release", ...ten);
      if (!(await sink.waitFor(2 + ten.length, 120_000))) {
        throw new Error("the 10 MB messages were not delivered");
      }
    });
    report(`out, ${ten.length} concurrent ${each / MB} MB messages to smtp-sink`, ten.length * each, many);
  } finally {
    await terminate(b.child, b.status, 15_000);
    await sink.stop();
  }
  const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
  console.log(`load average: ${load}`);
} finally {
  await Deno.remove(parent, { recursive: true }).catch(() => {});
}
