/**
 * `deno task bench:queue [N]`: Ferry and Postfix with N (default 100,000) messages of 10 KiB deferred to a
 * dead destination, measured in the same run on the same disk. Prints, per target: accept rate with an empty
 * queue and with the full one (goal ≥ 0.9×), spool size on disk, and the time to drain everything once the
 * destination comes back (a live smtp-sink) after a flush (`deno task queue flush` / `postqueue -f`). For
 * Ferry also: RSS and CPU while idle with the full queue (goals ≤ 200 MB, < 2 % of a core), and after a
 * restart the time to listening (goal < 1 s) and to the whole queue known.
 * Both samples of the accept rate start settled, after a sync(1) (see fill()).
 * Run as root with Postfix installed (bench/_postfix.ts builds a throwaway instance).
 */

import { runLoad } from "./_load.ts";
import { freePort, startPostfix, waitForBanner } from "./_postfix.ts";
import { syncDisks, terminate } from "./_process.ts";
import { repoRoot } from "./_ferry.ts";
import { AdminClient } from "../src/admin/client.ts";
import { readUrlFile } from "../src/admin/url_file.ts";
import type { QueueSummary } from "../src/spool/spool.ts";

const N = Number(Deno.args[0] ?? Deno.env.get("BENCH_QUEUE_MESSAGES") ?? 100_000);
const SESSIONS = 50;
const BODY = 10 * 1024;
const SAMPLE = Math.min(5_000, Math.floor(N / 4));
const FROM = "sender@client.test";
const TO = "rcpt@bench.test";

const fmt = (n: number, digits = 0) => Number.isFinite(n) ? n.toFixed(digits) : "n/a";

async function du(path: string): Promise<number> {
  const out = await new Deno.Command("du", { args: ["-sb", path] }).output();
  return Number(new TextDecoder().decode(out.stdout).split(/\s/)[0]);
}

/** Sends `count` messages over 50 sessions; returns msg/s (every transaction must get 250). */
async function send(port: number, count: number): Promise<number> {
  const per = Math.ceil(count / SESSIONS);
  const r = await runLoad({
    host: "127.0.0.1",
    port,
    sessions: SESSIONS,
    messagesPerSession: per,
    bodyBytes: BODY,
    from: FROM,
    to: TO,
    replyTimeoutMs: 60_000,
  });
  if (r.failed > 0) throw new Error(`${r.failed} transaction(s) failed: ${r.failures.join("; ")}`);
  return r.msgsPerSec;
}

/**
 * Fills to `total` in chunks, measuring an early and the last `SAMPLE`. Each sample starts from the same
 * state: the target has caught up with what it was sent (`settle`), and the page cache has been written back
 * (`syncDisks`): right after ~1 GB of fill the kernel is still writing it out, and every fsync waits behind that,
 * which is the fill's cost, not the queue's. A warm-up before the first sample does the same for JIT warm-up
 * and the first delivery attempts that mark the destination dead.
 */
async function fill(
  port: number,
  total: number,
  label: string,
  settle: (sent: number) => Promise<void>,
): Promise<{ empty: number; full: number }> {
  const warmUp = 1_000;
  await send(port, warmUp);
  let sent = warmUp;
  await settle(sent);
  await syncDisks();
  const empty = await send(port, SAMPLE);
  sent += Math.ceil(SAMPLE / SESSIONS) * SESSIONS;
  const chunk = 10_000;
  while (sent < total - SAMPLE) {
    const n = Math.min(chunk, total - SAMPLE - sent);
    await send(port, n);
    sent += Math.ceil(n / SESSIONS) * SESSIONS;
    console.error(`${label}: ${sent} queued`);
  }
  await settle(sent);
  await syncDisks();
  const full = await send(port, SAMPLE);
  return { empty, full };
}

function procStat(pid: number): { cpuTicks: number; rssBytes: number } {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpuTicks = Number(fields[11]) + Number(fields[12]);
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const rss = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
  return { cpuTicks, rssBytes: rss };
}

async function poll(check: () => Promise<boolean>, timeoutMs: number, stepMs = 100): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return false;
}

function startSink(port: number): Deno.ChildProcess {
  return new Deno.Command("/usr/sbin/smtp-sink", {
    args: ["-u", "nobody", "-c", `127.0.0.1:${port}`, "1000"],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

interface FerryRun {
  child: Deno.ChildProcess;
  status: Promise<Deno.CommandStatus>;
  port: number;
  startedAt: number;
}

function spawnFerry(spool: string, port: number, deadPort: number): FerryRun {
  const startedAt = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "mod.ts", "--config", "bench/ferry.config.ts"],
    cwd: repoRoot,
    env: {
      FERRY_PORT: String(port),
      FERRY_SPOOL: spool,
      FERRY_LOG: `${spool}.log`,
      FERRY_DELIVER_TO: `127.0.0.1:${deadPort}`,
      FERRY_RETRY_EVERY: "1h",
    },
    stdin: "null",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  return { child, status: child.status, port, startedAt };
}

/** The running Ferry's admin API, as `deno task queue` finds it (admin.url and admin.token in the spool). */
async function adminOf(spool: string): Promise<AdminClient | undefined> {
  const url = await readUrlFile(spool).catch(() => undefined);
  const token = await Deno.readTextFile(`${spool}/admin.token`).catch(() => undefined);
  return url && token ? new AdminClient({ url, token: token.trim() }) : undefined;
}

async function summary(spool: string): Promise<QueueSummary | undefined> {
  const client = await adminOf(spool);
  try {
    return await client?.get<QueueSummary>("/api/queue/summary");
  } catch {
    return undefined;
  } finally {
    client?.close();
  }
}

const total = (s: QueueSummary | undefined) => s ? Object.values(s.byState).reduce((a, b) => a + b, 0) : -1;

async function benchFerry(parent: string) {
  const spool = `${parent}/ferry-queue-spool`;
  const port = freePort();
  const deadPort = freePort();
  let run = spawnFerry(spool, port, deadPort);
  await waitForBanner("127.0.0.1", port, 30_000);
  // Settled: nothing incoming or active, everything deferred.
  const settled = async () => {
    await poll(
      async () => {
        const s = await summary(spool);
        return s !== undefined && s.byState.incoming === 0 && s.byState.active === 0;
      },
      600_000,
      200,
    );
  };
  const rates = await fill(port, N, "ferry", settled);
  await settled();
  const queued = total(await summary(spool));
  await new Promise((r) => setTimeout(r, 2000));
  const a = procStat(run.child.pid);
  const t0 = performance.now();
  await new Promise((r) => setTimeout(r, 10_000));
  const b = procStat(run.child.pid);
  const ticks = Number(Deno.env.get("CLK_TCK") ?? 100);
  const idleCpu = ((b.cpuTicks - a.cpuTicks) / ticks) / ((performance.now() - t0) / 1000) * 100;
  const rss = b.rssBytes;
  const size = await du(spool);
  // Restart: time to the banner, and to the whole queue known (the admin API's summary).
  await terminate(run.child, run.status, 30_000);
  run = spawnFerry(spool, port, deadPort);
  await waitForBanner("127.0.0.1", port, 60_000);
  const listenMs = performance.now() - run.startedAt;
  await poll(async () => total(await summary(spool)) === queued, 60_000, 20);
  const knownMs = performance.now() - run.startedAt;
  // The destination comes back; a flush makes everything due now.
  const sink = startSink(deadPort);
  await waitForBanner("127.0.0.1", deadPort, 10_000);
  const d0 = performance.now();
  const admin = await adminOf(spool);
  if (!admin) throw new Error("the restarted Ferry has not published its admin API");
  await admin.post("/api/queue/flush");
  admin.close();
  const drained = await poll(async () => total(await summary(spool)) === 0, 1_800_000, 250);
  const drainMs = performance.now() - d0;
  try {
    sink.kill("SIGTERM");
  } catch { /* gone */ }
  await sink.status;
  await terminate(run.child, run.status, 30_000);
  await Deno.remove(spool, { recursive: true }).catch(() => {});
  return { rates, queued, idleCpu, rss, size, listenMs, knownMs, drainMs: drained ? drainMs : NaN };
}

async function benchPostfix(parent: string) {
  const deadPort = freePort();
  const pf = await startPostfix({ parent, relayTo: { host: "127.0.0.1", port: deadPort } });
  try {
    // Settled as Ferry is: everything sent is queued and the queue manager is done with it (all deferred).
    const rates = await fill(pf.port, N, "postfix", async (sent) => {
      await poll(
        async () => (await pf.queuedCount()) >= sent * 0.99 && (await pf.unsettledCount()) === 0,
        600_000,
        500,
      );
    });
    await poll(async () => (await pf.queuedCount()) >= N * 0.99, 600_000, 1000);
    const size = await du(`${pf.dir}/queue`);
    const sink = startSink(deadPort);
    await waitForBanner("127.0.0.1", deadPort, 10_000);
    const d0 = performance.now();
    await new Deno.Command("postqueue", { args: ["-c", `${pf.dir}/etc`, "-f"] }).output();
    const drained = await poll(async () => (await pf.queuedCount()) === 0, 1_800_000, 500);
    const drainMs = performance.now() - d0;
    try {
      sink.kill("SIGTERM");
    } catch { /* gone */ }
    await sink.status;
    return { version: pf.version, rates, size, drainMs: drained ? drainMs : NaN };
  } finally {
    await pf.stop();
  }
}

const parent = await Deno.makeTempDir({ prefix: "ferry-bench-queue-" });
await Deno.chmod(parent, 0o755); // Postfix's own user must reach its instance below
try {
  console.error(`bench:queue with ${N} messages of ${BODY} octets, ${SESSIONS} sessions`);
  const f = await benchFerry(parent);
  console.error(`ferry: ${JSON.stringify(f)}`);
  const p = await benchPostfix(parent);
  const ratio = (x: { empty: number; full: number }) => x.full / x.empty;
  console.log(
    [
      `queue: ${N} x 10 KiB deferred to a dead destination`,
      `  accept, empty queue:  ferry ${fmt(f.rates.empty)} msg/s   postfix ${fmt(p.rates.empty)} msg/s`,
      `  accept, full queue:   ferry ${fmt(f.rates.full)} msg/s (${
        fmt(ratio(f.rates), 2)
      }x, goal >= 0.9x)   ` +
      `postfix ${fmt(p.rates.full)} msg/s (${fmt(ratio(p.rates), 2)}x)`,
      `  ferry idle with ${f.queued} queued: RSS ${fmt(f.rss / 1048576)} MB (goal <= 200), ` +
      `CPU ${fmt(f.idleCpu, 2)} % of a core (goal < 2)`,
      `  ferry restart: listening after ${fmt(f.listenMs)} ms (goal < 1000), whole queue known after ` +
      `${fmt(f.knownMs)} ms`,
      `  spool on disk:        ferry ${fmt(f.size / 1048576)} MB   postfix ${fmt(p.size / 1048576)} MB`,
      `  drain after flush:    ferry ${fmt(f.drainMs / 1000, 1)} s   postfix ${fmt(p.drainMs / 1000, 1)} s ` +
      `(postqueue -f; Postfix ${p.version})`,
    ].join("\n"),
  );
} finally {
  await Deno.remove(parent, { recursive: true }).catch(() => {});
}
