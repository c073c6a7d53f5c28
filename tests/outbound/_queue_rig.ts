/**
 * A rig for queue manager unit tests: a fake clock, an in-memory spool, and a scripted `deliver` in place
 * of SMTP, so wake times, ordering and limits are observed without the network or real time.
 */

import type { Envelope, Recipient } from "../../src/core/envelope.ts";
import { MemoryLog } from "../../src/core/log.ts";
import { validateConfig } from "../../src/config/load.ts";
import type { ConfigInput } from "../../src/config/schema.ts";
import { MemoryResolver } from "../../src/dns/memory_resolver.ts";
import { EventBus } from "../../src/events/bus.ts";
import type { deliverGroup, RecipientOutcome } from "../../src/outbound/deliver.ts";
import type { Clock, ClockTimer } from "../../src/outbound/queue_clock.ts";
import { Scheduler } from "../../src/outbound/scheduler.ts";
import { MemorySpool, type MemorySpoolOptions } from "../../src/spool/memory_spool.ts";

/** A clock that moves only when told to. */
export class FakeClock implements Clock {
  #now: number;
  #timers: { at: number; fn: () => void; live: boolean }[] = [];

  constructor(start: number) {
    this.#now = start;
  }

  now = (): number => this.#now;

  timer(ms: number, fn: () => void): ClockTimer {
    const t = { at: this.#now + Math.max(0, ms), fn, live: true };
    this.#timers.push(t);
    return { cancel: () => (t.live = false) };
  }

  /** Live timers' due times, earliest first. */
  get pending(): number[] {
    return this.#timers.filter((t) => t.live).map((t) => t.at).sort((a, b) => a - b);
  }

  /** Moves time forward to `to`, firing due timers in order (letting promises settle after each). */
  async advanceTo(to: number): Promise<void> {
    for (;;) {
      const due = this.#timers.filter((t) => t.live && t.at <= to).sort((a, b) => a.at - b.at)[0];
      if (due === undefined) break;
      this.#now = Math.max(this.#now, due.at);
      due.live = false;
      due.fn();
      await settle();
    }
    this.#now = Math.max(this.#now, to);
  }
}

/** Lets queued promise callbacks and macrotasks (spool commits) run. */
export async function settle(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setTimeout(r, 0));
}

/** Settles until `pred` holds (at most 50 times); throws naming `what` when it never does. */
export async function until(pred: () => Promise<boolean> | boolean, what: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    if (await pred()) return;
    await settle();
  }
  throw new Error(`${what} did not happen`);
}

/** One call of the scripted deliver. */
export interface DeliverCall {
  id: string;
  domain: string;
  recipients: string[];
  signal?: AbortSignal;
}

/** What the script answers for one group. */
export type Script = (call: DeliverCall) => Promise<Partial<RecipientOutcome>> | Partial<RecipientOutcome>;

/** A queue manager on a fake clock with a scripted deliver. */
export interface Rig {
  clock: FakeClock;
  spool: MemorySpool;
  log: MemoryLog;
  events: EventBus;
  scheduler: Scheduler;
  calls: DeliverCall[];
  /** Stores a message (state from its recipients) */
  add(id: string, recipients: Partial<Recipient>[], extra?: Partial<Envelope>): Promise<void>;
  stop(): Promise<void>;
}

/** Builds a rig; `script` decides each group's outcome (default: delivered). */
export async function rig(opts: {
  start?: number;
  delivery?: ConfigInput["delivery"];
  script?: Script;
  random?: () => number;
  spool?: MemorySpoolOptions;
  retry?: ConfigInput["retry"];
}): Promise<Rig> {
  const clock = new FakeClock(opts.start ?? 1_000_000_000);
  const spool = new MemorySpool(opts.spool);
  await spool.open();
  const log = new MemoryLog();
  const config = validateConfig({
    hostname: "ferry.test",
    routes: [{ domains: "*", mx: true }],
    retry: opts.retry ?? [{ domains: "*", rules: [{ every: "10m", until: "1d" }] }],
    delivery: { delayWarning: 0, ...opts.delivery },
  });
  const events = new EventBus({}, { log });
  const calls: DeliverCall[] = [];
  const script = opts.script ?? (() => ({ kind: "delivered", status: "2.0.0", text: "250 OK" }));
  const deliver: typeof deliverGroup = async (env, _data, recipients, _route, domain, _policy, deps) => {
    const call = { id: env.id, domain, recipients: recipients.map((r) => r.address), signal: deps.signal };
    calls.push(call);
    const o = await script(call);
    return recipients.map((recipient): RecipientOutcome => ({
      recipient,
      kind: "delivered",
      status: "2.0.0",
      text: "250 OK",
      ...o,
    }));
  };
  const scheduler = new Scheduler({
    config,
    hostname: "ferry.test",
    spool,
    resolver: new MemoryResolver(),
    log,
    events,
    endpoints: [],
    clock,
    random: opts.random,
    deliver,
  });
  return {
    clock,
    spool,
    log,
    events,
    scheduler,
    calls,
    async add(id, recipients, extra = {}) {
      const data = new TextEncoder().encode(`Subject: ${id}\r\n\r\nbody\r\n`);
      await spool.store({
        id,
        sender: "sender@example.org",
        recipients: recipients.map((r) => ({ address: "x@dest.test", status: "pending", ...r })),
        size: data.length,
        receivedAt: clock.now(),
        protocol: "esmtp",
        client: { ip: "127.0.0.1", port: 1 },
        receivedBy: "ferry.test",
        ...extra,
      }, data);
    },
    async stop() {
      await scheduler.stop(1000);
      await spool.close();
    },
  };
}
