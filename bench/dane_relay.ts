/**
 * `deno task bench:dane`: relay throughput with DANE lookups on against the same run with DANE off.
 *
 * The destination bench.test lives in a DNSSEC-signed zone served by a local unbound (MX, A and a TLSA 3 1 1
 * record for the receiving MX); the receiving MX is a private Postfix smtpd with STARTTLS (HOLD queue). Ferry
 * runs as a child (bench/ferry.config.ts with FERRY_MX_PORT and FERRY_DNS) and routes bench.test by MX through
 * unbound, once with DANE (default `hostsTryDane: "*"`: TLSA asked, the certificate checked against it, logged
 * `CV=dane TLS=dane(3)`) and once with `hostsTryDane: []` (opportunistic TLS, no TLSA query). The two modes
 * alternate for BENCH_DANE_ROUNDS rounds, each with a fresh Ferry and spool: 50 concurrent sessions send
 * BENCH_DANE_MESSAGES messages each; the rate is delivered messages (`=>` lines in Ferry's log) per second from
 * the first message sent to the last delivery. unbound logs every query it receives, so the bench also
 * prints how many TLSA (and MX, A) queries Ferry sent per round: with answers cached, a handful per run, not
 * one per message. Prints the load average beside every figure (the machine is shared).
 *
 * Knobs (env): BENCH_SESSIONS (50), BENCH_DANE_MESSAGES per session (40), BENCH_DANE_ROUNDS (2),
 * BENCH_BODY bytes (10240). Exit 0 whatever the ratio; non-zero when the bench itself fails.
 */

import { startPostfix } from "./_postfix.ts";
import { startFerryChild } from "./_ferry.ts";
import { BODY, load, num, SESSIONS } from "./_common.ts";
import { createPki } from "../tests/helpers/pki.ts";
import { sha256Hex, spkiDer } from "../tests/helpers/dane.ts";
import { startUnbound } from "../tests/helpers/unbound.ts";
import { syncDisks } from "./_process.ts";

const PER_SESSION = num("BENCH_DANE_MESSAGES", 40);
const ROUNDS = num("BENCH_DANE_ROUNDS", 2);

const loadavg = () => Deno.loadavg().map((n) => n.toFixed(2)).join(" ");

async function count(path: string, needle: string): Promise<number> {
  const text = await Deno.readTextFile(path).catch(() => "");
  let n = 0;
  for (let i = text.indexOf(needle); i >= 0; i = text.indexOf(needle, i + needle.length)) n++;
  return n;
}

/** Polls until `path` holds `n` occurrences of `needle`; returns the time it was seen, or undefined. */
async function waitCount(
  path: string,
  needle: string,
  n: number,
  timeoutMs: number,
): Promise<number | undefined> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (await count(path, needle) >= n) return performance.now();
    await new Promise((r) => setTimeout(r, 50));
  }
  return undefined;
}

interface Run {
  mode: "on" | "off";
  rate: number;
  delivered: number;
  labelled: number;
  tlsa: number;
  /** TLSA queries since this Ferry started (warm-up included) */
  tlsaTotal: number;
  mx: number;
  a: number;
  load: string;
  failed: number;
}

/** Runs the DANE on/off relay rounds and prints their figures; 0 when every message was delivered. */
export async function daneRelayBench(): Promise<number> {
  const parent = await Deno.makeTempDir({ prefix: "ferry-bench-dane-" });
  await Deno.chmod(parent, 0o755); // the Postfix daemons (user postfix) must reach their queue
  const stops: (() => Promise<void>)[] = [];
  let broken = false;
  try {
    const pki = await createPki();
    stops.push(() => pki.cleanup());
    const leaf = await pki.issue({ cn: "mx.bench.test", dns: ["mx.bench.test"] });
    const postfix = await startPostfix({
      parent,
      domain: "bench.test",
      tls: { certFile: leaf.chainFile, keyFile: leaf.keyFile },
    });
    stops.push(() => postfix.stop());
    const spki = await sha256Hex(await spkiDer(leaf.certFile));
    const unbound = await startUnbound({
      logQueries: true,
      zones: [{
        name: "bench.test",
        signed: true,
        records: `@ IN MX 10 mx\nmx IN A 127.0.0.1\n_${postfix.port}._tcp.mx IN TLSA 3 1 1 ${spki}`,
      }],
    });
    stops.push(() => unbound.stop());
    const queryLog = `${unbound.dir}/unbound.log`;
    console.log(
      `machine: nproc ${navigator.hardwareConcurrency}, deno ${Deno.version.deno}; postfix ${postfix.version} ` +
        `smtpd with STARTTLS on 127.0.0.1:${postfix.port} (HOLD queue); unbound on 127.0.0.1:${unbound.port} ` +
        `with bench.test signed (MX, A, TLSA 3 1 1 at _${postfix.port}._tcp.mx.bench.test, TTL 300)`,
    );
    console.log(
      `load: ${SESSIONS} concurrent sessions × ${PER_SESSION} messages of ${BODY} bytes per run, ` +
        `${ROUNDS} rounds, the order of DANE off and on alternating, the disks synced before each run`,
    );
    const runs: Run[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      // Alternated, and synced first: a run must not pay for the writeback of the one before it.
      for (const mode of round % 2 === 0 ? ["off", "on"] as const : ["on", "off"] as const) {
        await syncDisks();
        const f = await startFerryChild(parent, {
          tag: `dane-${mode}-${round}`,
          env: {
            FERRY_MX_PORT: String(postfix.port),
            FERRY_DNS: `127.0.0.1:${unbound.port}`,
            FERRY_DANE: mode,
          },
        });
        try {
          const target = {
            name: "ferry",
            host: f.host,
            port: f.port,
            stored: () => Promise.resolve(undefined),
          };
          const q = (type: string) => count(queryLog, ` ${type} IN`);
          const first = { tlsa: await q("TLSA"), mx: await q("MX"), a: await q("A") };
          // Warm-up: Ferry's connections, Postfix's smtpd processes, the first DNS answers.
          const warm = await load(target, 2);
          if (warm.failed || !await waitCount(f.logFile, " => ", warm.ok, 60_000)) {
            throw new Error(`warm-up did not deliver (${warm.failures.slice(0, 3).join("; ")})`);
          }
          const before = { tlsa: await q("TLSA"), mx: await q("MX"), a: await q("A"), delivered: warm.ok };
          const startLoad = loadavg();
          const r = await load(target, PER_SESSION);
          const done = await waitCount(f.logFile, " => ", before.delivered + r.ok, 120_000);
          const delivered = (await count(f.logFile, " => ")) - before.delivered;
          const label = mode === "on" ? " CV=dane TLS=dane(3) " : " CV=no TLS=opportunistic ";
          const total = { tlsa: (await q("TLSA")) - first.tlsa, mx: (await q("MX")) - first.mx };
          const run: Run = {
            mode,
            rate: done ? r.ok / ((done - r.startedAt) / 1000) : 0,
            delivered,
            labelled: await count(f.logFile, label),
            tlsa: (await q("TLSA")) - before.tlsa,
            tlsaTotal: total.tlsa,
            mx: (await q("MX")) - before.mx,
            a: (await q("A")) - before.a,
            load: `${startLoad} → ${loadavg()}`,
            failed: r.failed + (done ? 0 : r.ok - delivered),
          };
          // Every delivery, warm-up included, must carry the mode's label: a DANE-on run that fell back to
          // opportunistic TLS would otherwise be reported as DANE.
          const unlabelled = warm.ok + delivered - run.labelled;
          if (unlabelled > 0) run.failed += unlabelled;
          runs.push(run);
          console.log(
            `round ${round + 1} DANE ${mode.padEnd(3)}: delivered ${Math.round(run.rate)} msg/s ` +
              `(${delivered} of ${r.ok} accepted; ${run.labelled} of ${warm.ok + delivered} with warm-up ` +
              `logged${label.trimEnd()}); queries during the run: TLSA ${run.tlsa}, MX ${run.mx}, A ${run.a}; ` +
              `since Ferry started: TLSA ${total.tlsa}, MX ${total.mx}; load ${run.load}` +
              (run.failed ? ` [${run.failed} FAILED]` : ""),
          );
          if (run.failed) broken = true;
        } finally {
          await f.stop();
        }
      }
    }
    const mean = (m: "on" | "off") => {
      const xs = runs.filter((r) => r.mode === m).map((r) => r.rate);
      return xs.reduce((a, b) => a + b, 0) / xs.length;
    };
    const on = mean("on"), off = mean("off");
    const tlsa = runs.filter((r) => r.mode === "on").map((r) => r.tlsaTotal);
    const msgs = runs.filter((r) => r.mode === "on").map((r) => r.delivered);
    console.log(
      `summary: relay with DANE ${Math.round(on)} msg/s, without ${Math.round(off)} msg/s, ratio ` +
        `${(on / off).toFixed(2)} (acceptance: no drop); TLSA queries per DANE-on Ferry (warm-up included) ` +
        `${tlsa.join(", ")} for ${msgs.join(", ")} measured messages (answers cached)`,
    );
    if (broken) console.log("bench: some messages failed; the figures above are not valid");
  } catch (e) {
    console.error(`bench failed: ${(e as Error).message}`);
    broken = true;
  } finally {
    for (const stop of stops.reverse()) await stop().catch((e) => console.error(`cleanup: ${e}`));
    await Deno.remove(parent, { recursive: true }).catch(() => undefined);
  }
  return broken ? 1 : 0;
}

if (import.meta.main) Deno.exit(await daneRelayBench());
