/**
 * Exim is the oracle for rate limits: the same event sequence goes through Exim 4.96's `ratelimit` (in an
 * `exim -bh` session, one RCPT an event, with real pauses between them) and through Ferry's engine with the
 * memory store and the Redis store, replaying Exim's own event times. Where Exim stored the event, its time
 * and rate come from its hints database (exim_dumpdb: microseconds, rate to 0.001) and Ferry must agree
 * exactly. An event Exim did not store (leaky, over the limit) has only the rate Exim printed (0.1) and
 * its time between two $tod_epoch_l readings, one before the ratelimit condition and one after: Ferry's rate
 * must lie within what that interval allows, and the decision must match unless the limit lies inside it.
 */

import assert from "node:assert/strict";
import { MemoryRateStore, type RateMode, type RateStore, smoothedRate } from "../../src/policy/rate_limit.ts";
import { RedisRateStore } from "../../src/policy/rate_store_redis.ts";
import { RedisService } from "../../src/policy/redis_service.ts";
import { ensureExim, eximConfig, eximRateRecords, EximSession } from "../helpers/exim.ts";
import { TestRedis } from "../helpers/redis.ts";
import { sleep } from "../helpers/process.ts";

interface Scenario {
  name: string;
  mode: Exclude<RateMode, "readonly">;
  limit: number;
  periodS: number;
  /** Pause before each event, in ms (the pauses are the experiment, not synchronisation) */
  pauses: number[];
  /** Per event: the unique value (the recipient's local part) */
  unique?: string[];
}

interface EximEvent {
  over: boolean;
  /** Seconds since the epoch, as Exim saw the event */
  time: number;
  rate: number;
  /** True when time and rate are Exim's stored values (exact), false when from $tod_epoch_l and %.1f */
  exact: boolean;
  /** For an inexact event: $tod_epoch_l after the condition (`time` is the reading before it) */
  timeAfter: number;
  /**
   * Exim stamps the stored record's seconds with time(), a coarse clock that can still show the previous
   * second just after a second boundary, while it computed the rate with gettimeofday(): the stored time is
   * then a second early. Later events are measured from that stored time (in Exim and in the replay), but
   * this event's own rate cannot be replayed from it, so it is not compared.
   */
  stampedEarly: boolean;
}

const PAUSES = [0, 40, 40, 40, 40, 450, 40, 700, 40, 40, 1300, 40, 40, 40, 1900, 40, 40, 40];

const SCENARIOS: Scenario[] = [
  { name: "leaky", mode: "leaky", limit: 3, periodS: 2, pauses: PAUSES },
  { name: "strict", mode: "strict", limit: 3, periodS: 2, pauses: PAUSES },
  {
    name: "strict-unique",
    mode: "strict",
    limit: 3,
    periodS: 2,
    // After the 2.6 s pause the unique values' set has been reset: u1 counts once more, then not.
    pauses: [0, 40, 40, 40, 40, 40, 40, 600, 40, 40, 2600, 40],
    unique: ["u1", "u1", "u2", "u2", "u3", "u1", "u4", "u4", "u5", "u1", "u1", "u1"],
  },
];

/**
 * Runs a scenario through Exim until no stored record was stamped a second early (see `stampedEarly`: a
 * sequence with one cannot be replayed past it), at most 5 times.
 */
async function throughEximCleanly(exim: string, s: Scenario): Promise<EximEvent[]> {
  let events: EximEvent[] = [];
  for (let attempt = 0; attempt < 5; attempt++) {
    events = await throughExim(exim, s);
    if (!events.some((e) => e.stampedEarly)) return events;
  }
  return events;
}

/** Runs a scenario through Exim and returns what it decided for each event. */
async function throughExim(exim: string, s: Scenario): Promise<EximEvent[]> {
  const options = [`${s.limit} / ${s.periodS}s / per_rcpt / ${s.mode}`];
  if (s.unique) options.push("unique=$local_part");
  options.push("oracle");
  const dir = await eximConfig(
    exim,
    "acl_smtp_rcpt = acl_rcpt",
    [
      "acl_rcpt:",
      "  warn set acl_m_t = $tod_epoch_l",
      `  deny ratelimit = ${options.join(" / ")}`,
      "       message = OVER $acl_m_t $tod_epoch_l $sender_rate",
      "  accept message = UNDER $acl_m_t $tod_epoch_l $sender_rate",
    ].join("\n"),
  );
  const session = await EximSession.start(exim, dir);
  try {
    assert.match(await session.cmd("EHLO client.test"), /^250 /);
    assert.match(await session.cmd("MAIL FROM:<a@sender.test>"), /^250 /);
    const events: EximEvent[] = [];
    const key = `${s.periodS}s/per_rcpt/${s.unique ? "unique/" : ""}oracle`;
    let lastStored: number | undefined;
    for (let i = 0; i < s.pauses.length; i++) {
      await sleep(s.pauses[i]);
      const line = await session.cmd(`RCPT TO:<${s.unique?.[i] ?? "u"}@rcpt.test>`);
      const m = /^(250|550) (UNDER|OVER) (\d+) (\d+) (\d+\.\d)$/.exec(line);
      assert.ok(m, `unexpected Exim reply ${JSON.stringify(line)}`);
      const stored = (await eximRateRecords(exim, dir)).get(key);
      const fresh = stored !== undefined && stored.time !== lastStored;
      if (fresh) lastStored = stored.time;
      events.push({
        over: m[2] === "OVER",
        time: fresh ? stored.time : Number(m[3]) / 1e6,
        rate: fresh ? stored.rate : Number(m[5]),
        exact: fresh,
        timeAfter: Number(m[4]) / 1e6,
        stampedEarly: fresh && stored.time < Number(m[3]) / 1e6 - 0.5,
      });
    }
    return events;
  } finally {
    await session.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** Replays Exim's event times through a store; returns the decisions and rates. */
async function replay(
  s: Scenario,
  events: EximEvent[],
  makeStore: (clock: () => number) => RateStore,
): Promise<{ over: boolean; rate: number }[]> {
  let now = 0;
  const store = makeStore(() => now);
  const out = [];
  for (let i = 0; i < events.length; i++) {
    now = events[i].time;
    const r = await store.update({
      key: `oracle-${s.name}`,
      periodMs: s.periodS * 1000,
      limit: s.limit,
      mode: s.mode,
      count: 1,
      unique: s.unique?.[i],
    });
    out.push({ over: r.over, rate: r.rate });
  }
  return out;
}

function assertSame(s: Scenario, store: string, exim: EximEvent[], ours: { over: boolean; rate: number }[]) {
  const table = exim.map((e, i) =>
    `${i}: exim ${e.over ? "over " : "under"} ${e.rate.toFixed(3)}${e.exact ? "" : "~"}${
      e.stampedEarly ? "!" : ""
    }  ${store} ${ours[i].over ? "over " : "under"} ${ours[i].rate.toFixed(3)}`
  ).join("\n");
  let last: EximEvent | undefined;
  for (let i = 0; i < exim.length; i++) {
    const e = exim[i];
    // Five sequences in a row each with a record stamped early: compare what comes before it.
    if (e.stampedEarly) break;
    // An inexact event is measured from the last stored one (leaky mode did not store it): how much the rate
    // can move between the two clock readings around it widens the tolerance.
    const spread = e.exact || !last ? 0 : Math.abs(
      smoothedRate(last.rate, e.timeAfter - last.time, s.periodS, 1) -
        smoothedRate(last.rate, e.time - last.time, s.periodS, 1),
    );
    const tolerance = e.exact ? 0.0006 : 0.0501 + spread;
    const ambiguous = !e.exact && Math.abs(ours[i].rate - s.limit) <= tolerance;
    if (!ambiguous) assert.equal(ours[i].over, e.over, `${s.name}, event ${i}, ${store}:\n${table}`);
    assert.ok(
      Math.abs(ours[i].rate - e.rate) <= tolerance,
      `${s.name}, event ${i}, ${store} rate:\n${table}`,
    );
    if (e.exact) last = e;
  }
}

Deno.test("ratelimit: the memory and Redis stores decide as Exim 4.96 does, leaky, strict and unique", async () => {
  const exim = await ensureExim();
  const results = await Promise.all(SCENARIOS.map((s) => throughEximCleanly(exim, s)));
  const redis = await TestRedis.start();
  const service = new RedisService({ servers: [{ url: redis.url }], timeoutMs: 2000, log: () => {} });
  try {
    await service.open();
    for (const [i, s] of SCENARIOS.entries()) {
      const events = results[i];
      // The sequence must exercise both answers, or it proves nothing.
      assert.ok(
        events.some((e) => e.over) && events.some((e) => !e.over),
        `${s.name}: ${JSON.stringify(events)}`,
      );
      assertSame(
        s,
        "memory",
        events,
        await replay(s, events, (clock) => new MemoryRateStore({ now: clock })),
      );
      assertSame(
        s,
        "redis",
        events,
        await replay(s, events, (clock) => new RedisRateStore({ redis: service, clock, prefix: `t${i}:` })),
      );
    }
    // Leaky and strict part ways on the same pauses: a client over the limit keeps its rate up only in strict.
    assert.notDeepEqual(results[0].map((e) => e.over), results[1].map((e) => e.over));
  } finally {
    await service.close();
    await redis.cleanup();
  }
});
