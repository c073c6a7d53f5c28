/**
 * `deno task bench:queue [N]`: Ferry and Postfix with N (default 100,000) messages of 10 KiB deferred to a
 * dead destination, measured in the same run on the same disk. Prints, per target: accept rate with an empty
 * queue and with the full one (goal ≥ 0.9×), spool size on disk, and the time to drain everything once the
 * destination comes back (a live smtp-sink) after a flush (`deno task queue flush` / `postqueue -f`). For
 * Ferry also: RSS and CPU while idle with the full queue (goals ≤ 200 MB, < 2 % of a core), and after a
 * restart the time to listening (goal < 1 s) and to the whole queue known.
 * Every accept-rate sample starts settled, after a sync(1) (see sample()). Ferry's figures are taken in turn
 * with a control Ferry started with it, whose queue is emptied before the second figure. The goal figure is
 * Ferry's full-queue rate over its empty-queue rate, divided by how much the control's rate moved between the
 * two figures: the machine's drift over the minutes of the fill cannot pass for an effect of the queue.
 * Run as root with Postfix installed (bench/_postfix.ts builds a throwaway instance).
 */

import { median, runLoad } from "./_load.ts";
import { freePort, startPostfix, waitForBanner } from "./_postfix.ts";
import { syncDisks, terminate } from "./_process.ts";
import { repoRoot } from "./_ferry.ts";
import { positiveInt } from "./_common.ts";
import { AdminClient } from "../src/admin/client.ts";
import { readUrlFile } from "../src/admin/url_file.ts";
import type { QueueSummary } from "../src/spool/spool.ts";

const N = Number(Deno.args[0] ?? Deno.env.get("BENCH_QUEUE_MESSAGES") ?? 100_000);
const SESSIONS = 50;
const BODY = 10 * 1024;
/** Messages per accept-rate sample, and samples per figure (the figure is their median) */
const SAMPLE = Math.min(3_000, Math.floor(N / 20));
const ROUNDS = positiveInt("BENCH_QUEUE_ROUNDS", 5);
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

/** A target the accept rate is sampled on: its port, and how to wait until it has caught up with `sent`. */
interface Sampled {
  port: number;
  sent: number;
  settle: (sent: number) => Promise<void>;
}

/**
 * One accept-rate sample of `SAMPLE` messages, started from a settled state: the target has caught up with
 * what it was sent (`settle`), and the page cache has been written back (`syncDisks`): right after ~1 GB of
 * fill the kernel is still writing it out, and every fsync waits behind that, which is the fill's cost, not
 * the queue's.
 */
async function sample(t: Sampled): Promise<number> {
  await t.settle(t.sent);
  await syncDisks();
  const rate = await send(t.port, SAMPLE);
  t.sent += Math.ceil(SAMPLE / SESSIONS) * SESSIONS;
  return rate;
}

/**
 * `rounds` samples of each target, taken in turn and in alternating order (a b, b a, a b, ...): the machine's
 * drift falls on each alike, and neither always goes first.
 */
async function alternate(targets: Sampled[], rounds: number): Promise<number[][]> {
  const out = targets.map(() => [] as number[]);
  for (let i = 0; i < rounds; i++) {
    const order = [...targets.keys()];
    if (i % 2 === 1) order.reverse();
    for (const k of order) out[k].push(await sample(targets[k]));
  }
  return out;
}

/** Sends messages (not measured) until the target has been sent `total`. */
async function fillTo(t: Sampled, total: number, label: string): Promise<void> {
  const chunk = 10_000;
  while (t.sent < total - ROUNDS * SAMPLE) {
    const n = Math.min(chunk, total - ROUNDS * SAMPLE - t.sent);
    await send(t.port, n);
    t.sent += Math.ceil(n / SESSIONS) * SESSIONS;
    console.error(`${label}: ${t.sent} queued`);
  }
}

/** A warm-up of JIT and of the first delivery attempts (which mark the destination dead). */
async function warmUp(t: Sampled): Promise<void> {
  await send(t.port, 1_000);
  t.sent += 1_000;
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

/** Settled: nothing incoming or active in the Ferry on `spool`, everything deferred. */
function ferrySettled(spool: string): () => Promise<void> {
  return async () => {
    await poll(
      async () => {
        const s = await summary(spool);
        return s !== undefined && s.byState.incoming === 0 && s.byState.active === 0;
      },
      600_000,
      200,
    );
  };
}

/** Deletes everything queued in the Ferry on `spool` (through its admin API, 1,000 at a time). */
async function emptyQueue(spool: string): Promise<void> {
  const admin = await adminOf(spool);
  if (!admin) throw new Error("the control Ferry has not published its admin API");
  try {
    for (;;) {
      const page = await admin.get<{ messages: { id: string }[] }>("/api/queue", { limit: 1000 });
      if (page.messages.length === 0) return;
      const done = await admin.post<{ results: { ok: boolean }[] }>("/api/queue/delete", {
        ids: page.messages.map((m) => m.id),
      });
      // Nothing deleted would list the same page again forever.
      if (!done.results.some((r) => r.ok)) throw new Error("the control's queue could not be emptied");
    }
  } finally {
    admin.close();
  }
}

async function benchFerry(parent: string) {
  const spool = `${parent}/ferry-queue-spool`;
  const port = freePort();
  const deadPort = freePort();
  let run = spawnFerry(spool, port, deadPort);
  await waitForBanner("127.0.0.1", port, 30_000);
  const settled = ferrySettled(spool);
  const target: Sampled = { port, sent: 0, settle: settled };
  // The control: a second Ferry started with this one and sampled in turn with it, its queue emptied before
  // the second figure, so that the machine's drift over the minutes of the fill does not pass for an effect
  // of the queue. (A control started afresh for the second figure measured 10-20 % faster than one of the
  // same age as the target: it is not the same yardstick.)
  const controlSpool = `${parent}/ferry-control-spool`;
  const controlRun = spawnFerry(controlSpool, freePort(), freePort());
  let rates;
  try {
    await waitForBanner("127.0.0.1", controlRun.port, 30_000);
    const control: Sampled = { port: controlRun.port, sent: 0, settle: ferrySettled(controlSpool) };
    await warmUp(target);
    await warmUp(control);
    const [empty, emptyControl] = await alternate([target, control], ROUNDS);
    await fillTo(target, N, "ferry");
    await control.settle(control.sent);
    await emptyQueue(controlSpool);
    const [full, fullControl] = await alternate([target, control], ROUNDS);
    rates = { empty, emptyControl, full, fullControl };
  } finally {
    await terminate(controlRun.child, controlRun.status, 30_000);
    await Deno.remove(controlSpool, { recursive: true }).catch(() => {});
  }
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
    const target: Sampled = {
      port: pf.port,
      sent: 0,
      settle: async (sent) => {
        await poll(
          async () => (await pf.queuedCount()) >= sent * 0.99 && (await pf.unsettledCount()) === 0,
          600_000,
          500,
        );
      },
    };
    await warmUp(target);
    const [empty] = await alternate([target], ROUNDS);
    await fillTo(target, N, "postfix");
    const [full] = await alternate([target], ROUNDS);
    const rates = { empty, full };
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
  const all = (xs: number[]) => xs.map((x) => fmt(x)).join(" ");
  const fr = f.rates;
  const own = median(fr.full) / median(fr.empty);
  const drift = median(fr.fullControl) / median(fr.emptyControl);
  const ferryRatio = own / drift;
  console.log(
    [
      `queue: ${N} x 10 KiB deferred to a dead destination; accept rates are medians of ${ROUNDS} samples of ` +
      `${SAMPLE} messages`,
      `  accept, empty queue:  ferry ${fmt(median(fr.empty))} msg/s [${all(fr.empty)}]   control ferry ` +
      `${fmt(median(fr.emptyControl))} [${all(fr.emptyControl)}]   postfix ${fmt(median(p.rates.empty))} ` +
      `[${all(p.rates.empty)}]`,
      `  accept, full queue:   ferry ${fmt(median(fr.full))} msg/s [${all(fr.full)}]   control ferry ` +
      `${fmt(median(fr.fullControl))} [${all(fr.fullControl)}]   postfix ${fmt(median(p.rates.full))} ` +
      `[${all(p.rates.full)}]`,
      // The control's two figures differ only by the machine's drift between them (both are empty Ferrys):
      // the goal figure is Ferry's own full/empty ratio with that drift taken out.
      `  full against empty:   ferry ${fmt(own, 2)}x of its own empty-queue ` +
      `rate; the control moved ${fmt(drift, 2)}x over the same ` +
      `time; corrected for that: ${fmt(ferryRatio, 2)}x (goal >= 0.9x)   postfix ${
        fmt(median(p.rates.full) / median(p.rates.empty), 2)
      }x of its own`,
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
