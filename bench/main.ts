/**
 * `deno task bench`: Ferry against Postfix under the same load, in the same run, on the same disk.
 *
 * Three phases, each with its own fresh pair of targets, one result line per scenario:
 * - accept: inbound-accept, 50 concurrent SMTP sessions (RFC 5321, PIPELINING per RFC 2920) sending
 *   10 KiB messages to a durable spool, plus a cross-check with Postfix's smtp-source;
 * - relay: the same senders through the target to a local `smtp-sink` (end to end), with 1 and with 10
 *   recipients per message: accepted msg/s, delivered msg/s (arrival at the sink) and 250 → arrival times;
 * - starttls: inbound accept over STARTTLS (RFC 3207), many messages per connection and one per connection;
 * - dane: relay with DANE on against DANE off in the same run (`bench/dane_relay.ts`, also `deno task
 *   bench:dane`): TLSA answers cached, so no drop is expected.
 * Prints msg/s, p50/p99 latencies and the ratio Ferry/Postfix. Exit 0 whatever the ratio (a report, not a
 * test); non-zero when the bench itself fails (a target will not start, or any transaction does not get
 * its 250, or relayed mail does not all arrive). Only loopback is used; Ferry's DNS client points at
 * 127.0.0.1:9, and both targets deliver to an IP literal, so no DNS query is ever sent.
 *
 * The accept phase measures each scenario in BENCH_ROUNDS rounds (3), alternating which target goes first,
 * and its summary gives the medians.
 * Knobs (env): BENCH_SESSIONS (50), BENCH_MESSAGES per session (100), BENCH_BODY bytes (10240), BENCH_ROUNDS,
 * BENCH_WARMUP (5 per session),
 * BENCH_POSTFIX_IN_FLOW_DELAY (0s; Postfix's own default is 1s), BENCH_ONLY (comma list of phases:
 * accept,relay,starttls,dane), BENCH_RELAY_MESSAGES (100) and BENCH_RELAY10_MESSAGES (40) per session,
 * BENCH_RELAY_DRAIN_SECONDS (120), BENCH_POSTFIX_INITIAL_CONCURRENCY (Postfix default 5),
 * BENCH_TLS_MESSAGES per session (50), BENCH_TLS_CONNECTIONS per client with one message each (20),
 * BENCH_TLS_KEY (rsa:2048, or ec:P-256), BENCH_FERRY=standin to measure the stand-in acceptor instead of
 * Ferry (harness development only; accept phase only).
 */

import { type PostfixInstance, startPostfix } from "./_postfix.ts";
import { syncDisks } from "./_process.ts";
import { median } from "./_load.ts";
import { type ChildTarget, ferryAvailable, startFerryChild } from "./_ferry.ts";
import { startCountingSink } from "./_sink.ts";
import { makeCertificates } from "./_certs.ts";
import {
  ACCEPT_ROUNDS,
  BODY,
  Figure,
  GOAL,
  IN_FLOW_DELAY,
  ONLY,
  PER_SESSION,
  Phase,
  PhaseContext,
  poll,
  POSTFIX_INITIAL_CONCURRENCY,
  RELAY10_MESSAGES,
  RELAY_GOAL,
  RELAY_MESSAGES,
  Scenario,
  SESSIONS,
  Target,
  TLS_CONNECTIONS,
  TLS_KEY,
  TLS_MESSAGES,
  WARMUP_PER_SESSION,
} from "./_common.ts";
import { acceptScenarios, relayScenario, starttlsScenario } from "./_scenarios.ts";
import { daneRelayBench } from "./dane_relay.ts";

// ---------------------------------------------------------------- phases

async function countLog(path: string, needle: string): Promise<number> {
  const text = await Deno.readTextFile(path).catch(() => "");
  let n = 0;
  for (const l of text.split("\n")) if (l.includes(needle)) n++;
  return n;
}

async function countLogAccepts(path: string): Promise<number | undefined> {
  const count = () => Deno.stat(path).then(() => countLog(path, " <= "), () => undefined);
  // Ferry's log is written behind the replies (buffered, asynchronously): the last lines of a burst can land
  // a moment after its last 250, and be counted with the next burst. Count once the file stops growing.
  let last = await count();
  await poll(async () => {
    const now = await count();
    const still = now === last;
    last = now;
    return still;
  }, 2000);
  return last;
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
    rounds: ACCEPT_ROUNDS,
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

/** One round's figures, by target name. */
type Figures = Record<string, Figure | undefined>;

/** Ferry's rate over Postfix's in one round, when both were measured. */
function ratioOf(r: Figures, ferryName: string): number | undefined {
  const f = r[ferryName], p = r["postfix"];
  return f && p && p.msgsPerSec > 0 ? f.msgsPerSec / p.msgsPerSec : undefined;
}

/**
 * Measures `s` on every target `count` times, printing each round. Rounds alternate which target goes first
 * (this machine's speed drifts over minutes), and their medians set aside a round that stands out: Postfix's
 * first after it starts is its slowest.
 */
async function measureRounds(
  s: Scenario,
  targets: Target[],
  count: number,
  ferryName: string,
  ferry: ChildTarget | undefined,
): Promise<Figures[]> {
  const rounds: Figures[] = [];
  for (let round = 0; round < count; round++) {
    const figures: Figures = {};
    for (const t of round % 2 === 0 ? targets : [...targets].reverse()) {
      // Each target starts with the page cache written back: without this the second target's fsyncs wait
      // behind the writeback of what the first one just stored.
      await syncDisks();
      figures[t.name] = await s.measure(t);
      if (ferry?.exited()) throw new Error(`Ferry exited during "${s.name}":\n${ferry.output()}`);
    }
    rounds.push(figures);
    console.log(
      `${s.name}${count > 1 ? ` [round ${round + 1}/${count}]` : ""}: ${ferryName} ${
        fmt(figures[ferryName])
      }, ` +
        `postfix ${fmt(figures["postfix"])}, ratio ${ratioOf(figures, ferryName)?.toFixed(2) ?? "n/a"}`,
    );
    for (const [name, fig] of Object.entries(figures)) {
      for (const msg of fig?.failures ?? []) console.log(`  ${name} failure: ${msg}`);
    }
  }
  return rounds;
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
          const count = phase.rounds ?? 1;
          const rounds = await measureRounds(s, targets, count, ferryName, ferry);
          if (rounds.some((r) => Object.values(r).some((fig) => fig?.failed))) broken = true;
          const rates = (name: string) =>
            rounds.map((r) => r[name]?.msgsPerSec).filter((n): n is number => n !== undefined);
          const ratios = rounds.map((r) => ratioOf(r, ferryName)).filter((n): n is number => n !== undefined);
          const known = (n: number) => Number.isFinite(n) ? n : undefined;
          const f = known(median(rates(ferryName))), p = known(median(rates("postfix")));
          const ratio = known(median(ratios));
          const over = count > 1 && ratios.length
            ? ` (the median of the rounds' ratios: ${ratios.map((r) => r.toFixed(2)).join(", ")})`
            : "";
          if (s.name === "inbound-accept") {
            summary.push(
              f !== undefined && p !== undefined && ratio !== undefined
                ? `inbound-accept ${ferryName} ${Math.round(f)} msg/s vs postfix ${Math.round(p)} msg/s ` +
                  `(medians), ratio ${ratio.toFixed(2)}×${over} (goal ≥${GOAL}×: ${
                    ratio >= GOAL ? "met" : "NOT met"
                  })`
                : `inbound-accept postfix ${Math.round(p ?? 0)} msg/s; ferry not measured`,
            );
          } else if (s.name.startsWith("relay") && ratio !== undefined) {
            summary.push(
              `${s.name} delivered ${ratio.toFixed(2)}× postfix (issue ≥1×: ${
                ratio >= 1 ? "met" : "NOT met"
              }; ` +
                `goal ≥${RELAY_GOAL}×: ${ratio >= RELAY_GOAL ? "met" : "NOT met"})${over}`,
            );
          } else if (ratio !== undefined) {
            summary.push(`${s.name} ${ratio.toFixed(2)}× postfix${over}`);
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
    if (ONLY.includes("dane") && !standin) {
      // Relay with DANE on against off (unbound with a signed zone, Postfix with STARTTLS as the MX).
      console.log(`-- dane (load ${Deno.loadavg().map((n) => n.toFixed(2)).join(" ")})`);
      if (await daneRelayBench() !== 0) broken = true;
    }
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
