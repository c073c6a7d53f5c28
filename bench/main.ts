/**
 * `deno task bench`: Ferry against Postfix under the same load, in the same run, on the same disk.
 *
 * Scenario list (one result line each); today: inbound-accept, 50 concurrent SMTP sessions (RFC 5321,
 * PIPELINING per RFC 2920) sending 10 KiB messages to a durable spool, plus a cross-check with
 * Postfix's smtp-source. Prints msg/s, p50/p99 transaction latency and the ratio Ferry/Postfix.
 * Exit 0 whatever the ratio (a report, not a test); non-zero when the bench itself fails
 * (a target will not start, or any transaction does not get its 250).
 *
 * Knobs (env): BENCH_SESSIONS (50), BENCH_MESSAGES per session (100), BENCH_BODY bytes (10240),
 * BENCH_POSTFIX_IN_FLOW_DELAY (0s; Postfix's own default is 1s), BENCH_FERRY=standin to measure the stand-in acceptor instead of Ferry (harness development only).
 */

import { type LoadResult, runLoad, runSmtpSource } from "./_load.ts";
import { type PostfixInstance, startPostfix } from "./_postfix.ts";
import { type ChildTarget, ferryAvailable, startFerryChild } from "./_ferry.ts";

const SESSIONS = Number(Deno.env.get("BENCH_SESSIONS") ?? 50);
const PER_SESSION = Number(Deno.env.get("BENCH_MESSAGES") ?? 100);
const BODY = Number(Deno.env.get("BENCH_BODY") ?? 10240);
const WARMUP_PER_SESSION = 5;
const FROM = "sender@client.test";
const TO = "rcpt@bench.test";
const GOAL = 3;

/** An SMTP endpoint being measured, with a way to count what it stored. */
interface Target {
  name: string;
  host: string;
  port: number;
  /** Messages it reports as stored so far (undefined when it cannot tell). */
  stored(): Promise<number | undefined>;
}

/** One measured figure for one target. */
interface Figure {
  msgsPerSec: number;
  p50Ms?: number;
  p99Ms?: number;
  failed: number;
  failures: string[];
  note?: string;
}

/** A benchmark scenario: runs its own warm-up, then one measured run against a target. */
interface Scenario {
  name: string;
  measure(target: Target): Promise<Figure>;
}

const load = (t: Target, perSession: number): Promise<LoadResult> =>
  runLoad({
    host: t.host,
    port: t.port,
    sessions: SESSIONS,
    messagesPerSession: perSession,
    bodyBytes: BODY,
    from: FROM,
    to: TO,
    replyTimeoutMs: 30_000,
  });

const scenarios: Scenario[] = [
  {
    name: "inbound-accept",
    async measure(t) {
      const warm = await load(t, WARMUP_PER_SESSION);
      if (warm.failed) {
        return { msgsPerSec: 0, failed: warm.failed, failures: warm.failures, note: "warm-up" };
      }
      const before = await t.stored();
      const r = await load(t, PER_SESSION);
      const after = await t.stored();
      const note = before !== undefined && after !== undefined && after - before !== r.ok
        ? `stored ${after - before} but ${r.ok} got 250`
        : undefined;
      return {
        msgsPerSec: r.msgsPerSec,
        p50Ms: r.p50Ms,
        p99Ms: r.p99Ms,
        failed: r.failed,
        failures: r.failures,
        note,
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

function fmt(f: Figure | undefined): string {
  if (!f) return "not available";
  const lat = f.p50Ms !== undefined ? ` (p50 ${f.p50Ms.toFixed(1)} ms, p99 ${f.p99Ms!.toFixed(1)} ms)` : "";
  const bad = f.failed ? ` [${f.failed} FAILED]` : "";
  return `${Math.round(f.msgsPerSec)} msg/s${lat}${bad}${f.note ? ` [${f.note}]` : ""}`;
}

async function countLogAccepts(path: string): Promise<number | undefined> {
  try {
    const text = await Deno.readTextFile(path);
    return text.split("\n").filter((l) => l.includes(" <= ")).length;
  } catch {
    return undefined;
  }
}

async function machineFacts(): Promise<string> {
  const cpu = (await Deno.readTextFile("/proc/cpuinfo").catch(() => "")).match(/model name\s*:\s*(.*)/)?.[1];
  return `machine: nproc ${navigator.hardwareConcurrency}, ${cpu ?? "unknown CPU"}, ` +
    `deno ${Deno.version.deno}, load ${Deno.loadavg().map((n) => n.toFixed(2)).join(" ")}`;
}

async function bench(): Promise<number> {
  const parent = await Deno.makeTempDir({ prefix: "ferry-bench-" });
  await Deno.chmod(parent, 0o755); // the Postfix daemons (user postfix) must reach their queue
  let postfix: PostfixInstance | undefined;
  let ferry: ChildTarget | undefined;
  const standin = Deno.env.get("BENCH_FERRY") === "standin";
  let broken = false;
  const onSignal = () => {
    Promise.allSettled([ferry?.stop(), postfix?.stop()]).finally(() => {
      Deno.removeSync(parent, { recursive: true });
      Deno.exit(130);
    });
  };
  Deno.addSignalListener("SIGINT", onSignal);
  try {
    console.log(await machineFacts());
    console.log(
      `load: ${SESSIONS} concurrent sessions × ${PER_SESSION} messages of ${BODY} bytes ` +
        `(warm-up ${SESSIONS} × ${WARMUP_PER_SESSION}), durable spool on ${parent}`,
    );
    postfix = await startPostfix({ parent, inFlowDelay: Deno.env.get("BENCH_POSTFIX_IN_FLOW_DELAY") });
    console.log(
      `postfix: ${postfix.version}, isolated instance on 127.0.0.1:${postfix.port}, HOLD queue, ` +
        `in_flow_delay ${Deno.env.get("BENCH_POSTFIX_IN_FLOW_DELAY") ?? "0s"}`,
    );
    if (standin || await ferryAvailable()) {
      ferry = await startFerryChild(parent, { standin });
      console.log(
        `${ferry.name}: 127.0.0.1:${ferry.port}${standin ? " (NOT Ferry: stand-in acceptor)" : ""}`,
      );
    } else {
      console.log("ferry: not available (mod.ts missing)");
    }
    const pf = postfix;
    const targets: Target[] = [
      ...(ferry ? [{ ...ferry, stored: () => countLogAccepts(`${parent}/ferry.log`) }] : []),
      { name: "postfix", host: pf.host, port: pf.port, stored: () => pf.heldCount() },
    ];
    let headline: { ferry?: Figure; postfix?: Figure } | undefined;
    for (const s of scenarios) {
      const figures: Record<string, Figure | undefined> = {};
      for (const t of targets) {
        figures[t.name] = await s.measure(t);
        if (ferry?.exited()) throw new Error(`Ferry exited during "${s.name}":\n${ferry.output()}`);
      }
      const f = ferry ? figures[ferry.name] : undefined;
      const p = figures["postfix"];
      const ratio = f && p && p.msgsPerSec > 0 ? (f.msgsPerSec / p.msgsPerSec).toFixed(2) : "n/a";
      console.log(`${s.name}: ${ferry?.name ?? "ferry"} ${fmt(f)}, postfix ${fmt(p)}, ratio ${ratio}`);
      for (const [name, fig] of Object.entries(figures)) {
        for (const msg of fig?.failures ?? []) console.log(`  ${name} failure: ${msg}`);
        if (fig?.failed) broken = true;
      }
      headline ??= { ferry: f, postfix: p };
    }
    const hf = headline?.ferry, hp = headline?.postfix;
    if (hf && hp) {
      const r = hf.msgsPerSec / hp.msgsPerSec;
      console.log(
        `summary: inbound-accept ${ferry!.name} ${Math.round(hf.msgsPerSec)} msg/s vs postfix ` +
          `${Math.round(hp.msgsPerSec)} msg/s = ${r.toFixed(2)}× (goal ≥${GOAL}×: ${
            r >= GOAL ? "met" : "NOT met"
          })`,
      );
    } else {
      console.log(
        `summary: inbound-accept postfix ${Math.round(hp?.msgsPerSec ?? 0)} msg/s; ferry not measured`,
      );
    }
    if (broken) console.log("bench: some transactions failed; the figures above are not valid");
  } catch (e) {
    console.error(`bench failed: ${(e as Error).message}`);
    if (postfix) console.error(`postfix log tail:\n${await postfix.logTail(5)}`);
    broken = true;
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    const results = await Promise.allSettled([ferry?.stop(), postfix?.stop()]);
    for (const r of results) {
      if (r.status === "rejected") {
        console.error(`cleanup failed: ${(r.reason as Error).message}`);
        broken = true;
      }
    }
    await Deno.remove(parent, { recursive: true }).catch(() => undefined);
  }
  return broken ? 1 : 0;
}

if (import.meta.main) Deno.exit(await bench());
