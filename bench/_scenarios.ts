/** The measured scenarios: inbound accept, relay to smtp-sink, and STARTTLS (see main.ts for the phases). */

import { percentile, runSmtpSource } from "./_load.ts";
import {
  BODY,
  failedFigure,
  FROM,
  load,
  ms,
  PER_SESSION,
  poll,
  RELAY_DRAIN_MS,
  Scenario,
  SESSIONS,
  storedNote,
  TO,
  WARMUP_PER_SESSION,
} from "./_common.ts";

// ---------------------------------------------------------------- accept

export const acceptScenarios: Scenario[] = [
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
export function relayScenario(rcptCount: number, perSession: number): Scenario {
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

export function starttlsScenario(name: string, sessionsPerClient: number, perSession: number): Scenario {
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
