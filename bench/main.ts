/**
 * `deno task bench`: Ferry against Postfix under the same load, in the same run, on the same disk.
 *
 * Three phases, each with its own fresh pair of targets, one result line per scenario:
 * - accept: inbound-accept, 50 concurrent SMTP sessions (RFC 5321, PIPELINING per RFC 2920) sending
 *   10 KiB messages to a durable spool, plus a cross-check with Postfix's smtp-source;
 * - relay: the same senders through the target to a local `smtp-sink` (end to end), with 1 and with 10
 *   recipients per message: accepted msg/s, delivered msg/s (arrival at the sink) and 250 → arrival times;
 * - starttls: inbound accept over STARTTLS (RFC 3207), many messages per connection and one per connection.
 * Prints msg/s, p50/p99 latencies and the ratio Ferry/Postfix. Exit 0 whatever the ratio (a report, not a
 * test); non-zero when the bench itself fails (a target will not start, or any transaction does not get
 * its 250, or relayed mail does not all arrive). Only loopback is used; Ferry's DNS client points at
 * 127.0.0.1:9, and both targets deliver to an IP literal, so no DNS query is ever sent.
 *
 * Knobs (env): BENCH_SESSIONS (50), BENCH_MESSAGES per session (100), BENCH_BODY bytes (10240),
 * BENCH_POSTFIX_IN_FLOW_DELAY (0s; Postfix's own default is 1s), BENCH_ONLY (comma list of phases:
 * accept,relay,starttls), BENCH_RELAY_MESSAGES (100) and BENCH_RELAY10_MESSAGES (40) per session,
 * BENCH_RELAY_DRAIN_SECONDS (120), BENCH_POSTFIX_INITIAL_CONCURRENCY (Postfix default 5),
 * BENCH_TLS_MESSAGES per session (50), BENCH_TLS_CONNECTIONS per client with one message each (20),
 * BENCH_TLS_KEY (rsa:2048, or ec:P-256), BENCH_FERRY=standin to measure the stand-in acceptor instead of
 * Ferry (harness development only; accept phase only).
 */

import { type LoadOptions, type LoadResult, percentile, runLoad, runSmtpSource } from "./_load.ts";
import { type PostfixInstance, startPostfix } from "./_postfix.ts";
import { type ChildTarget, ferryAvailable, startFerryChild } from "./_ferry.ts";
import { type CountingSink, startCountingSink } from "./_sink.ts";
import { makeCertificates } from "./_certs.ts";

const num = (name: string, dflt: number) => Number(Deno.env.get(name) ?? dflt);
const SESSIONS = num("BENCH_SESSIONS", 50);
const PER_SESSION = num("BENCH_MESSAGES", 100);
const BODY = num("BENCH_BODY", 10240);
const RELAY_MESSAGES = num("BENCH_RELAY_MESSAGES", 100);
const RELAY10_MESSAGES = num("BENCH_RELAY10_MESSAGES", 40);
const RELAY_DRAIN_MS = num("BENCH_RELAY_DRAIN_SECONDS", 120) * 1000;
const TLS_MESSAGES = num("BENCH_TLS_MESSAGES", 50);
const TLS_CONNECTIONS = num("BENCH_TLS_CONNECTIONS", 20);
const TLS_KEY = Deno.env.get("BENCH_TLS_KEY") ?? "rsa:2048";
const POSTFIX_INITIAL_CONCURRENCY = Deno.env.get("BENCH_POSTFIX_INITIAL_CONCURRENCY");
const IN_FLOW_DELAY = Deno.env.get("BENCH_POSTFIX_IN_FLOW_DELAY");
const ONLY = (Deno.env.get("BENCH_ONLY") ?? "accept,relay,starttls").split(",").map((s) => s.trim());
const WARMUP_PER_SESSION = 5;
const FROM = "sender@client.test";
const TO = "rcpt@bench.test";
const GOAL = 3;
const RELAY_GOAL = 2;

/** An SMTP endpoint being measured, with ways to see what it did with the mail. */
interface Target {
  name: string;
  host: string;
  port: number;
  /** Messages it reports as stored so far (undefined when it cannot tell). */
  stored(): Promise<number | undefined>;
  /** Relay phase: the sink this target delivers to. */
  sink?: CountingSink;
  /** Relay phase: recipients it logged as delivered so far. */
  deliveredRecipients?(): Promise<number>;
  /** Relay phase: true once nothing is left in its queue. */
  queueEmpty?(): Promise<boolean>;
  /** TLS phase: the CA the load generator must trust. */
  caPem?: string;
}

/** One measured figure for one target. */
interface Figure {
  /** The rate compared across targets. */
  msgsPerSec: number;
  /** What the rate counts, printed before it ("delivered ", or nothing). */
  what?: string;
  /** Unit printed after the rate. */
  unit?: string;
  /** Details printed in parentheses after the rate. */
  detail?: string;
  failed: number;
  failures: string[];
  note?: string;
}

/** A benchmark scenario: runs its own warm-up, then one measured run against a target. */
interface Scenario {
  name: string;
  measure(target: Target): Promise<Figure>;
}

/** A set of scenarios sharing one freshly started pair of targets. */
interface Phase {
  name: string;
  scenarios: Scenario[];
  /** Starts the targets; `stop` is registered before anything can fail half way. */
  start(ctx: PhaseContext): Promise<Target[]>;
}

interface PhaseContext {
  parent: string;
  standin: boolean;
  /** Registers something to stop when the phase ends (or the bench is interrupted). */
  onStop(stop: () => Promise<void>): void;
  /** Registers the Ferry child, so an exit during a scenario is caught. */
  setFerry(f: ChildTarget): void;
}

const ms = (n: number) => Number.isFinite(n) ? `${n.toFixed(1)} ms` : "n/a";

const load = (t: Target, perSession: number, extra: Partial<LoadOptions> = {}): Promise<LoadResult> =>
  runLoad({
    host: t.host,
    port: t.port,
    sessions: SESSIONS,
    messagesPerSession: perSession,
    bodyBytes: BODY,
    from: FROM,
    to: TO,
    replyTimeoutMs: 30_000,
    ...extra,
  });

const failedFigure = (r: LoadResult, note: string): Figure => ({
  msgsPerSec: 0,
  failed: r.failed,
  failures: r.failures,
  note,
});

async function storedNote(t: Target, before: number | undefined, ok: number): Promise<string | undefined> {
  const after = await t.stored();
  return before !== undefined && after !== undefined && after - before !== ok
    ? `stored ${after - before} but ${ok} got 250`
    : undefined;
}

async function poll(check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ---------------------------------------------------------------- accept

const acceptScenarios: Scenario[] = [
  {
    name: "inbound-accept",
    async measure(t) {
      const warm = await load(t, WARMUP_PER_SESSION);
      if (warm.failed) return failedFigure(warm, "warm-up");
      const before = await t.stored();
      const r = await load(t, PER_SESSION);
      return {
        msgsPerSec: r.msgsPerSec,
        detail: `p50 ${ms(r.p50Ms)}, p99 ${ms(r.p99Ms)}`,
        failed: r.failed,
        failures: r.failures,
        note: await storedNote(t, before, r.ok),
      };
    },
  },
  {
    name: "inbound-accept (smtp-source cross-check)",
    async measure(t) {
      const opts = { sessions: SESSIONS, bodyBytes: BODY, from: FROM, to: TO };
      await runSmtpSource(t, { ...opts, messages: SESSIONS * WARMUP_PER_SESSION });
      const before = await t.stored();
      const messages = SESSIONS * PER_SESSION;
      const r = await runSmtpSource(t, { ...opts, messages });
      const after = await t.stored();
      const stored = before !== undefined && after !== undefined ? after - before : undefined;
      const failed = r.code !== 0 ? messages - (stored ?? 0) : stored !== undefined ? messages - stored : 0;
      return {
        msgsPerSec: r.msgsPerSec,
        failed: Math.max(0, failed),
        failures: r.code !== 0 ? [`smtp-source exit ${r.code}: ${r.stderr}`] : [],
        note: stored !== undefined && stored !== messages ? `stored ${stored} of ${messages}` : undefined,
      };
    },
  },
];

// ---------------------------------------------------------------- relay

/**
 * End to end: load → target → smtp-sink. The k-th arrival at the sink is paired with the k-th 250 seen by
 * the load generator (both in time order): exact for the mean, and the true per-message time when the
 * target delivers in arrival order. smtp-sink counts one per transaction, whatever the recipients.
 */
function relayScenario(rcptCount: number, perSession: number): Scenario {
  const recipients = Array.from({ length: rcptCount }, (_, i) => `rcpt${i + 1}@bench.test`);
  return {
    name: `relay (${rcptCount} rcpt${rcptCount > 1 ? "s" : ""})`,
    async measure(t) {
      const sink = t.sink!;
      const warmBase = sink.count();
      const warm = await load(t, 2, { recipients });
      if (warm.failed) return failedFigure(warm, "warm-up");
      if (!await sink.waitFor(warmBase + warm.ok, RELAY_DRAIN_MS)) {
        return { msgsPerSec: 0, failed: warm.ok, failures: [], note: "warm-up mail did not all arrive" };
      }
      await poll(() => t.queueEmpty!(), 30_000);
      const base = sink.count();
      const rcptBase = await t.deliveredRecipients!();
      const r = await load(t, perSession, { recipients });
      const arrived = await sink.waitFor(base + r.ok, RELAY_DRAIN_MS);
      const arrivals = sink.arrivalsAfter(base).slice(0, r.ok);
      const lastArrival = arrivals.at(-1) ?? NaN;
      const deliveredPerSec = arrivals.length / ((lastArrival - r.startedAt) / 1000);
      const accepted = [...r.acceptedAt].sort((a, b) => a - b);
      const waits = arrivals.map((a, k) => a - accepted[k]).sort((a, b) => a - b);
      const emptied = await poll(() => t.queueEmpty!(), 30_000);
      const rcptDelivered = (await t.deliveredRecipients!()) - rcptBase;
      const notes: string[] = [];
      if (!arrived) {
        notes.push(`only ${arrivals.length} of ${r.ok} arrived within ${RELAY_DRAIN_MS / 1000} s`);
      }
      if (!emptied) notes.push("queue not empty 30 s after the last arrival");
      if (sink.count() - base !== r.ok) {
        notes.push(`sink got ${sink.count() - base} transactions for ${r.ok}`);
      }
      if (rcptDelivered !== r.ok * rcptCount) {
        notes.push(`logged ${rcptDelivered} recipient deliveries, expected ${r.ok * rcptCount}`);
      }
      return {
        msgsPerSec: Number.isFinite(deliveredPerSec) ? deliveredPerSec : 0,
        what: "delivered ",
        detail: `250→sink p50 ${ms(percentile(waits, 50))}, p99 ${ms(percentile(waits, 99))}; accepted ` +
          `${Math.round(r.msgsPerSec)} msg/s, p50 ${ms(r.p50Ms)}, p99 ${ms(r.p99Ms)}`,
        failed: r.failed + (arrived ? 0 : r.ok - arrivals.length),
        failures: r.failures,
        note: notes.length ? notes.join("; ") : undefined,
      };
    },
  };
}

// ---------------------------------------------------------------- starttls

function starttlsScenario(name: string, sessionsPerClient: number, perSession: number): Scenario {
  return {
    name,
    async measure(t) {
      const tls = { starttls: { caCerts: [t.caPem!], hostname: "localhost" } };
      const warm = await load(t, 2, tls);
      if (warm.failed) return failedFigure(warm, "warm-up");
      const before = await t.stored();
      const r = await load(t, perSession, { ...tls, sessionsPerClient });
      return {
        msgsPerSec: r.msgsPerSec,
        detail: `connect+STARTTLS+EHLO p50 ${ms(r.setupP50Ms)}, p99 ${ms(r.setupP99Ms)}; ` +
          `transaction p50 ${ms(r.p50Ms)}, p99 ${ms(r.p99Ms)}; ${r.sessions} TLS sessions`,
        failed: r.failed,
        failures: r.failures,
        note: await storedNote(t, before, r.ok),
      };
    },
  };
}

// ---------------------------------------------------------------- phases

async function countLog(path: string, needle: string): Promise<number> {
  const text = await Deno.readTextFile(path).catch(() => "");
  let n = 0;
  for (const l of text.split("\n")) if (l.includes(needle)) n++;
  return n;
}

async function countLogAccepts(path: string): Promise<number | undefined> {
  try {
    const text = await Deno.readTextFile(path);
    return text.split("\n").filter((l) => l.includes(" <= ")).length;
  } catch {
    return undefined;
  }
}

/** The Postfix instance started last, for its log tail when the bench fails. */
let lastPostfix: PostfixInstance | undefined;

async function startPostfixIn(ctx: PhaseContext, opts: Parameters<typeof startPostfix>[0]) {
  const pf = await startPostfix({ parent: ctx.parent, inFlowDelay: IN_FLOW_DELAY, ...opts });
  lastPostfix = pf;
  ctx.onStop(() => pf.stop());
  return pf;
}

async function startFerryIn(ctx: PhaseContext, opts: Parameters<typeof startFerryChild>[1]) {
  if (!ctx.standin && !await ferryAvailable()) {
    console.log("ferry: not available (mod.ts missing)");
    return undefined;
  }
  const f = await startFerryChild(ctx.parent, { standin: ctx.standin, ...opts });
  ctx.onStop(() => f.stop());
  ctx.setFerry(f);
  return f;
}

const postfixHeld = (pf: PostfixInstance): Target => ({
  name: "postfix",
  host: pf.host,
  port: pf.port,
  stored: () => pf.heldCount(),
});

const phases: Phase[] = [
  {
    name: "accept",
    scenarios: acceptScenarios,
    async start(ctx) {
      const pf = await startPostfixIn(ctx, {});
      console.log(
        `postfix: ${pf.version}, isolated instance on 127.0.0.1:${pf.port}, HOLD queue, ` +
          `in_flow_delay ${IN_FLOW_DELAY ?? "0s"}`,
      );
      const f = await startFerryIn(ctx, {});
      if (f) {
        console.log(`${f.name}: 127.0.0.1:${f.port}${ctx.standin ? " (NOT Ferry: stand-in acceptor)" : ""}`);
      }
      return [
        ...(f ? [{ ...f, stored: () => countLogAccepts(f.logFile) }] : []),
        postfixHeld(pf),
      ];
    },
  },
  {
    name: "relay",
    scenarios: [relayScenario(1, RELAY_MESSAGES), relayScenario(10, RELAY10_MESSAGES)],
    async start(ctx) {
      const targets: Target[] = [];
      if (!ctx.standin) {
        const sink = await startCountingSink();
        ctx.onStop(() => sink.stop());
        const f = await startFerryIn(ctx, {
          tag: "relay",
          env: { FERRY_DELIVER_TO: `${sink.host}:${sink.port}` },
        });
        if (f) {
          console.log(`ferry: 127.0.0.1:${f.port} → smtp-sink 127.0.0.1:${sink.port}`);
          targets.push({
            ...f,
            stored: () => countLogAccepts(f.logFile),
            sink,
            deliveredRecipients: () => countLog(f.logFile, " => "),
            queueEmpty: async () =>
              (await countLog(f.logFile, " Completed")) === (await countLog(f.logFile, " <= ")),
          });
        }
      } else {
        console.log("ferry: the stand-in cannot relay; not measured");
      }
      const sink = await startCountingSink();
      ctx.onStop(() => sink.stop());
      const initial = POSTFIX_INITIAL_CONCURRENCY ? Number(POSTFIX_INITIAL_CONCURRENCY) : undefined;
      const pf = await startPostfixIn(ctx, { relayTo: sink, concurrency: 50, initialConcurrency: initial });
      console.log(
        `postfix: 127.0.0.1:${pf.port} → smtp-sink 127.0.0.1:${sink.port}, relayhost, destination ` +
          `concurrency 50 (initial ${initial ?? "5, Postfix default"}), connection cache on demand`,
      );
      targets.push({
        name: "postfix",
        host: pf.host,
        port: pf.port,
        stored: () => Promise.resolve(undefined),
        sink,
        deliveredRecipients: () => pf.logCount("status=sent"),
        queueEmpty: async () => (await pf.queuedCount()) === 0,
      });
      return targets;
    },
  },
  {
    name: "starttls",
    scenarios: [
      starttlsScenario(`starttls (${SESSIONS} × 1 connection × ${TLS_MESSAGES} msgs)`, 1, TLS_MESSAGES),
      starttlsScenario(`starttls (${SESSIONS} × ${TLS_CONNECTIONS} connections × 1 msg)`, TLS_CONNECTIONS, 1),
    ],
    async start(ctx) {
      const dir = `${ctx.parent}/tls`;
      await Deno.mkdir(dir);
      await Deno.chmod(dir, 0o755);
      const certs = await makeCertificates(dir, { keyType: TLS_KEY });
      const targets: Target[] = [];
      if (!ctx.standin) {
        const f = await startFerryIn(ctx, {
          tag: "tls",
          env: { FERRY_TLS_CERT: certs.chainFile, FERRY_TLS_KEY: certs.keyFile },
        });
        if (f) targets.push({ ...f, stored: () => countLogAccepts(f.logFile), caPem: certs.caPem });
      } else {
        console.log("ferry: the stand-in has no TLS; not measured");
      }
      const pf = await startPostfixIn(ctx, { tls: { certFile: certs.chainFile, keyFile: certs.keyFile } });
      targets.push({ ...postfixHeld(pf), caPem: certs.caPem });
      console.log(
        `tls: ${certs.keyType} certificate for ${certs.serverName} signed by a throwaway CA; client ` +
          `Deno.startTls (rustls) for both; ferry and postfix (HOLD queue, smtpd_tls_security_level may)`,
      );
      return targets;
    },
  },
];

// ---------------------------------------------------------------- driver

function fmt(f: Figure | undefined): string {
  if (!f) return "not available";
  const bad = f.failed ? ` [${f.failed} FAILED]` : "";
  return `${f.what ?? ""}${Math.round(f.msgsPerSec)} ${f.unit ?? "msg/s"}${
    f.detail ? ` (${f.detail})` : ""
  }` +
    `${bad}${f.note ? ` [${f.note}]` : ""}`;
}

async function machineFacts(): Promise<string> {
  const cpu = (await Deno.readTextFile("/proc/cpuinfo").catch(() => "")).match(/model name\s*:\s*(.*)/)?.[1];
  return `machine: nproc ${navigator.hardwareConcurrency}, ${cpu ?? "unknown CPU"}, ` +
    `deno ${Deno.version.deno}, load ${Deno.loadavg().map((n) => n.toFixed(2)).join(" ")}`;
}

async function stopAll(stops: (() => Promise<void>)[]): Promise<string[]> {
  // Last started, first stopped: Ferry and Postfix before the sinks they deliver to.
  const errors: string[] = [];
  for (const stop of stops.splice(0).reverse()) {
    await stop().catch((e) => errors.push((e as Error).message));
  }
  return errors;
}

async function bench(): Promise<number> {
  const parent = await Deno.makeTempDir({ prefix: "ferry-bench-" });
  await Deno.chmod(parent, 0o755); // the Postfix daemons (user postfix) must reach their queue
  const standin = Deno.env.get("BENCH_FERRY") === "standin";
  const stops: (() => Promise<void>)[] = [];
  let broken = false;
  const onSignal = () => {
    stopAll(stops).finally(() => {
      Deno.removeSync(parent, { recursive: true });
      Deno.exit(130);
    });
  };
  Deno.addSignalListener("SIGINT", onSignal);
  const summary: string[] = [];
  try {
    console.log(await machineFacts());
    console.log(
      `load: ${SESSIONS} concurrent sessions, ${BODY}-byte bodies; accept ${PER_SESSION} msgs/session ` +
        `(warm-up ${WARMUP_PER_SESSION}), relay ${RELAY_MESSAGES} (1 rcpt) and ${RELAY10_MESSAGES} (10 rcpts) ` +
        `msgs/session, starttls ${TLS_MESSAGES} msgs/session and ${TLS_CONNECTIONS} × 1-msg sessions per ` +
        `client; durable spools on ${parent}`,
    );
    for (const phase of phases.filter((p) => ONLY.includes(p.name))) {
      let ferry: ChildTarget | undefined;
      const ctx: PhaseContext = {
        parent,
        standin,
        onStop: (s) => stops.push(s),
        setFerry: (f) => ferry = f,
      };
      console.log(`-- ${phase.name} (load ${Deno.loadavg().map((n) => n.toFixed(2)).join(" ")})`);
      try {
        lastPostfix = undefined;
        const targets = await phase.start(ctx);
        const ferryName = ferry?.name ?? "ferry";
        for (const s of phase.scenarios) {
          const figures: Record<string, Figure | undefined> = {};
          for (const t of targets) {
            figures[t.name] = await s.measure(t);
            if (ferry?.exited()) throw new Error(`Ferry exited during "${s.name}":\n${ferry.output()}`);
          }
          const f = figures[ferryName], p = figures["postfix"];
          const ratio = f && p && p.msgsPerSec > 0 ? f.msgsPerSec / p.msgsPerSec : undefined;
          console.log(
            `${s.name}: ${ferryName} ${fmt(f)}, postfix ${fmt(p)}, ratio ${ratio?.toFixed(2) ?? "n/a"}`,
          );
          for (const [name, fig] of Object.entries(figures)) {
            for (const msg of fig?.failures ?? []) console.log(`  ${name} failure: ${msg}`);
            if (fig?.failed) broken = true;
          }
          if (s.name === "inbound-accept") {
            summary.push(
              f && p
                ? `inbound-accept ${ferryName} ${Math.round(f.msgsPerSec)} msg/s vs postfix ` +
                  `${Math.round(p.msgsPerSec)} msg/s = ${ratio!.toFixed(2)}× (goal ≥${GOAL}×: ${
                    ratio! >= GOAL ? "met" : "NOT met"
                  })`
                : `inbound-accept postfix ${Math.round(p?.msgsPerSec ?? 0)} msg/s; ferry not measured`,
            );
          } else if (s.name.startsWith("relay") && ratio !== undefined) {
            summary.push(
              `${s.name} delivered ${ratio.toFixed(2)}× postfix (issue ≥1×: ${
                ratio >= 1 ? "met" : "NOT met"
              }; ` +
                `goal ${RELAY_GOAL}×: ${ratio >= RELAY_GOAL ? "met" : "NOT met"})`,
            );
          } else if (ratio !== undefined) {
            summary.push(`${s.name} ${ratio.toFixed(2)}× postfix`);
          }
        }
      } catch (e) {
        if (lastPostfix) console.error(`postfix log tail:\n${await lastPostfix.logTail(5)}`);
        throw e;
      } finally {
        for (const msg of await stopAll(stops)) {
          console.error(`cleanup failed: ${msg}`);
          broken = true;
        }
      }
    }
    for (const line of summary) console.log(`summary: ${line}`);
    if (broken) console.log("bench: some transactions failed; the figures above are not valid");
  } catch (e) {
    console.error(`bench failed: ${(e as Error).message}`);
    broken = true;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    for (const msg of await stopAll(stops)) {
      console.error(`cleanup failed: ${msg}`);
      broken = true;
    }
    await Deno.remove(parent, { recursive: true }).catch(() => undefined);
  }
  return broken ? 1 : 0;
}

if (import.meta.main) Deno.exit(await bench());
