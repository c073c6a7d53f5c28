/**
 * The queue manager (after Postfix's qmgr): claims due messages from the spool's index into a bounded
 * active window — `incoming` before `deferred`, earliest due first — and is woken by one timer armed at the
 * earliest next attempt the index holds (re-armed after every change), by new mail directly, and by queue
 * operations; it never walks the queue. Each message's recipients are grouped by route and destination and
 * the groups run concurrently, under per-destination concurrency and dead-destination throttling. Each
 * group's outcomes, with the reports (RFC 3464) they cause, are written in one spool transaction as soon as
 * its replies are in (before the next message on the same connection may end its data, deliver.ts); a write
 * that fails is retried, never followed by sending those recipients again.
 * Retry times follow the retry rules plus jitter. A stop aborts deliveries in flight and saves what completed.
 */

import { reportEnvelope } from "./local_message.ts";
import type { Envelope, Recipient } from "../core/envelope.ts";
import type { Logger } from "../core/log.ts";
import { normalizeName } from "../core/host_list.ts";
import type { ResolvedConfig } from "../config/schema.ts";
import type { Resolver } from "../dns/resolver.ts";
import type { EventBus } from "../events/bus.ts";
import {
  type Claimed,
  CorruptMessageError,
  type DeliveryUpdate,
  type NewMessage,
  type Spool,
} from "../spool/spool.ts";
import type { TlsClientContext } from "../tls/client.ts";
import { ConnectionPool } from "./connection_pool.ts";
import { deliverGroup, type RecipientOutcome } from "./deliver.ts";
import { buildDsn } from "./dsn_report.ts";
import { HostRetry } from "./host_retry.ts";
import { compileRetryConfig, nextRetry, type RetryRule } from "./retry_rules.ts";
import { compileRoutes, findRoute, type Route, type RouteSpec, type SelfInfo } from "./routing.ts";
import { type TransportPolicy, transportPolicy } from "./transport.ts";
import type { SecurityPolicy } from "./security/engine.ts";
import { outboundPolicies } from "./security/mod.ts";
import type { TlsRptStore } from "./security/tls_rpt.ts";
import { TLS_RPT_KIND_PREFIX } from "./tls_rpt_report.ts";
import { errorMessage } from "../core/error_message.ts";
import { type Clock, type ClockTimer, retryJitter, systemClock } from "./queue_clock.ts";
import { Destinations } from "./destinations.ts";
import {
  applyOutcome,
  deliveryFacts,
  domainOf,
  type OutcomeContext,
  recipientChange,
  type RecipientExtra,
  type Reports,
} from "./outcome.ts";
import { delayReports } from "./delay_warning.ts";
import type { QueueManagerHooks } from "./queue_ops.ts";
import type { OutboundStep } from "../policy/delivery_context.ts";
import { prepareDelivery } from "./outbound_chain.ts";
import type { Observer } from "../core/observer.ts";

/** What the scheduler needs. */
export interface SchedulerDeps {
  config: ResolvedConfig;
  hostname: string;
  spool: Spool;
  resolver: Resolver;
  log: Logger;
  events: EventBus;
  tlsContext?: TlsClientContext;
  /** Our own listening endpoints ("ip:port"), for loop detection */
  endpoints: string[];
  /** Time and timers (tests use a fake clock) */
  clock?: Clock;
  /** Random numbers in [0, 1) for retry jitter */
  random?: () => number;
  /** Delivers one group (tests replace the SMTP side); default: deliverGroup() */
  deliver?: typeof deliverGroup;
  /** Internal hooks for metrics and the dashboard */
  observer?: Observer;
  /** The outbound chain: built-in steps (DKIM signing) then `outbound` from config.ts */
  outbound?: readonly OutboundStep[];
  /** Where TLS outcomes and MTA-STS fetch failures are recorded (RFC 8460), when `tlsRpt.enable` */
  tlsRpt?: TlsRptStore;
}

/**
 * Messages up to this size come with their claim (read in the claim's transaction): a delivery then needs no
 * further round trip to the spool before it sends. Larger ones are read when their attempt starts.
 */
const CLAIM_DATA_LIMIT = 64 * 1024;

/** Recipients that go to one destination together. */
interface Group {
  /** Destination key: the route for host routes, route and domain for MX routes */
  key: string;
  route?: Route;
  /** Set when finding the route failed */
  routeError?: string;
  domain: string;
  recipients: Recipient[];
}

/** How a message's run delivers one of its groups. */
interface GroupOptions {
  signal: AbortSignal;
  /** Also write the message's next state with the group's outcomes (the message's only group) */
  final: boolean;
  /** Called when the group's outcomes are known and only their writing remains */
  attempted: () => void;
  /** An operator's retry: a dead destination and hosts in back-off are tried anyway */
  forced?: boolean;
}

/**
 * What trying a group gave: its outcomes, still to be saved; or, when they were saved as each transaction's
 * replies came in (or nothing was tried: stopping), whether the message's next state was written with them.
 */
type Tried = { outcomes: RecipientOutcome[] } | { saved: boolean };

/** A message being delivered, or whose outcomes are being written. */
interface ActiveRun {
  abort: AbortController;
  done: Promise<void>;
  /** Still delivering (an attempt, or waiting for a destination slot); false once only writes remain */
  delivering: boolean;
}

/** The reason a dead destination's message is deferred without a connection. */
function notTried(dead: { failures: number; lastError?: string }): string {
  return `destination not responding (${dead.failures} connection failures, last: ${dead.lastError}); not tried`;
}

/**
 * The outcomes that count: all of them, or after an interrupt only definite replies — the rest stays as it
 * was, due again at once.
 */
function definite(outcomes: RecipientOutcome[], signal: AbortSignal): RecipientOutcome[] {
  return signal.aborted ? outcomes.filter((o) => o.kind !== "deferred") : outcomes;
}

/** Runs deliveries from the spool. */
export class Scheduler implements QueueManagerHooks {
  #deps: SchedulerDeps;
  #clock: Clock;
  #routes: Route[];
  /** Where quarantined recipients go (`quarantine.route`) */
  #quarantineRoute?: Route;
  #policies = new Map<Route, TransportPolicy>();
  #buses = new Map<Route, EventBus>();
  #pool: ConnectionPool;
  #hostRetry: HostRetry;
  #destinations: Destinations;
  #retryRulesFor: (domain: string) => Promise<RetryRule[] | undefined>;
  #jitter: (at: number, interval: number) => number;
  #self: SelfInfo;
  /** Security policies shared by every route (MTA-STS, with its one durable cache) */
  #extraPolicies: SecurityPolicy[];
  /** TLS-RPT results per policy domain and day (RFC 8460), durable in the spool directory */
  #tlsRpt?: TlsRptStore;
  #active = new Map<string, ActiveRun>();
  /** Messages an operator retried: their next run ignores host back-off and dead destinations */
  #forced = new Set<string>();
  /** Runs of #active still delivering (the rest only wait for their outcomes to be written) */
  #delivering = 0;
  #pumping: Promise<void> | undefined;
  #again = false;
  #timer: ClockTimer | undefined;
  #wakeAt = Infinity;
  #stopped = false;

  constructor(deps: SchedulerDeps) {
    this.#deps = deps;
    this.#clock = deps.clock ?? systemClock;
    const d = deps.config.delivery;
    const timeoutMs = deps.config.limits.policyTimeout;
    this.#routes = compileRoutes(deps.config.routes as RouteSpec[], { timeoutMs });
    const q = deps.config.quarantine?.route;
    this.#quarantineRoute = q === undefined ? undefined : this.#routes.find((r) => r.name === q);
    this.#pool = new ConnectionPool({ perHost: d.connectionsPerHost, idleTimeoutMs: d.idleTimeout });
    this.#hostRetry = new HostRetry({ baseMs: d.hostRetryBase, maxMs: d.hostRetryMax, now: this.#clock.now });
    this.#destinations = new Destinations({
      concurrency: d.destinationConcurrency,
      deadAfter: d.deadDestinationAfter,
      baseMs: d.hostRetryBase,
      maxMs: d.hostRetryMax,
      clock: this.#clock,
    });
    this.#retryRulesFor = compileRetryConfig(deps.config.retry, { timeoutMs });
    this.#jitter = retryJitter(d.retryJitter, deps.random);
    this.#self = { names: [normalizeName(deps.hostname)], endpoints: deps.endpoints };
    this.#tlsRpt = deps.tlsRpt;
    this.#extraPolicies = outboundPolicies(
      deps.config,
      deps.resolver,
      (line) => deps.log.write(line),
      deps.tlsRpt,
    );
  }

  /** Messages being delivered now. */
  get activeCount(): number {
    return this.#active.size;
  }

  /** When the wake timer is armed for (ms since epoch), or undefined when it is not armed. */
  get wakeAt(): number | undefined {
    return this.#timer === undefined ? undefined : this.#wakeAt;
  }

  /** Whether a message is being delivered now. */
  isActive(id: string): boolean {
    return this.#active.has(id);
  }

  /** Starts the queue manager: the first pass claims what is due (nothing is loaded into memory). */
  start(): Promise<void> {
    return this.wake();
  }

  /** New mail was stored (called directly by the inbound side, not through the event bus). */
  enqueue(_id: string): void {
    void this.wake();
  }

  /**
   * New mail, before it is stored: when every recipient's destination is dead now, applies to `env` the
   * deferral a queue run would make at once (dead-destination throttling: attempts, last error, next
   * attempt under the retry rules), so the message is stored `deferred` in the write that stores it instead
   * of being claimed and deferred in two more writes that share the spool's one writer with reception.
   * Resolves to the history lines to store with it and `stored()`, to call once it is stored (its log lines
   * then follow its `<=` line); undefined when it goes in as new mail (any destination alive, a recipient
   * that would fail, a quarantined one, routing that fails).
   */
  async deferIfDead(env: Envelope): Promise<{ history: string[]; stored(): void } | undefined> {
    if (this.#stopped || !this.#destinations.anyDead() || env.hold !== undefined) return undefined;
    const copy = structuredClone(env);
    const pending = copy.recipients.filter((r) => r.status === "pending");
    if (pending.length === 0 || pending.some((r) => r.extra?.quarantine !== undefined)) return undefined;
    const groups = await this.#groups(pending);
    const lines: [string, Parameters<Logger["write"]>[1]][] = [];
    const history: string[] = [];
    for (const g of groups) {
      const dead = g.route && !g.routeError ? this.#destinations.dead(g.key) : undefined;
      if (dead === undefined) return undefined;
      const ctx = {
        ...this.#outcomeContext(g.route),
        log: { write: (...l: (typeof lines)[number]) => lines.push(l) },
      };
      for (const recipient of g.recipients) {
        // One already past its retry rules would fail (with a report and events): that is a queue run's job.
        const extra = (recipient.extra ?? {}) as RecipientExtra;
        const rules = await this.#retryRulesFor(domainOf(recipient.address)) ?? [];
        if ("giveUp" in nextRetry(rules, extra.firstFailure ?? ctx.now, ctx.now, extra.lastInterval)) {
          return undefined;
        }
        const o: RecipientOutcome = { recipient, kind: "deferred", status: "4.4.1", text: notTried(dead) };
        history.push(await applyOutcome(copy, g.route, o, { failure: [], success: [], delay: [] }, ctx));
      }
    }
    env.recipients = copy.recipients;
    const next = Math.min(...env.recipients.map((r) => r.nextAttempt ?? Infinity));
    return {
      history,
      stored: () => {
        for (const [text, fields] of lines) this.#deps.log.write(text, fields);
        // Due before the timer fires (or no timer): look at the index again; otherwise the timer finds it.
        if (!this.#stopped && (this.#timer === undefined || next < this.#wakeAt)) void this.wake();
      },
    };
  }

  /**
   * Looks at the index now: claims due messages into free slots and re-arms the timer at the earliest next
   * attempt. Resolves when that pass is over.
   */
  wake(): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    if (this.#pumping !== undefined) {
      this.#again = true;
      return this.#pumping;
    }
    // #pump clears #pumping itself, in the same step that decides to end (cleared a microtask later, in a
    // .finally, a wake-up in between was folded into a run already over: new mail waited for the timer). Set
    // before the run starts, so a run that ended without ever waiting clears it too.
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#pumping = promise;
    this.#pump().then(resolve, resolve);
    return promise;
  }

  /**
   * The next run of `id` tries its hosts even in back-off or at a dead destination (an operator's retry,
   * `exim -M`); the back-off of other messages is left as it is.
   */
  force(id: string): void {
    this.#forced.add(id);
  }

  /** An operator's bounce or delete removed `id`: it will not run again. */
  removed(id: string, sender: string): void {
    this.#forced.delete(id);
    this.#deps.events.emit("msg:complete", { id, sender });
  }

  /** Forgets connection failures and host back-off (a flush: try every destination now). */
  forgetFailures(_domain?: string): void {
    this.#destinations.forgetFailures();
    this.#hostRetry.clear();
  }

  /** Aborts the delivery of `id` in flight, if any, and resolves when it has ended (its results saved). */
  async interrupt(id: string): Promise<void> {
    const run = this.#active.get(id);
    if (run === undefined) return;
    run.abort.abort(new Error("interrupted by an operator"));
    await run.done;
  }

  async #pump(): Promise<void> {
    const { spool, log } = this.#deps;
    try {
      while (!this.#stopped) {
        this.#again = false;
        const free = this.#free();
        if (free > 0) {
          // While a destination is dead, its deferrals never read a body: data comes with the claim only then.
          const dataUpTo = this.#destinations.anyDead() ? 0 : CLAIM_DATA_LIMIT;
          const claimed = await spool.claim(this.#clock.now(), free, { dataUpTo });
          for (const c of claimed) this.#start(c);
          if (claimed.length === free || this.#again) continue;
        }
        await this.#arm();
        // A wake-up that came in while the next due time was looked up may be for mail that lookup did not
        // see yet (stored beside it): look at the index again rather than leave it to the timer.
        if (!this.#again) break;
      }
    } catch (err) {
      if (this.#stopped) return;
      log.write(`queue run failed: ${errorMessage(err)}; trying again in 1s`);
      this.#setTimer(this.#clock.now() + 1000);
    } finally {
      this.#pumping = undefined;
    }
  }

  /** Arms the wake timer at the earliest due message (or after `queueInterval`, a safety net). */
  async #arm(): Promise<void> {
    if (this.#stopped) return;
    const now = this.#clock.now();
    let at = now + this.#deps.config.delivery.queueInterval;
    // A full window is woken by the next run that ends; no timer can add anything before that.
    if (this.#free() > 0) {
      const next = await this.#deps.spool.nextDue();
      if (next !== undefined) at = Math.min(at, Math.max(next, now + 1));
    }
    this.#setTimer(at);
  }

  /**
   * Free slots: `delivery.concurrency` messages deliver at once. A message whose attempts are over leaves its
   * slot while its outcomes are written (a group commit away), so the next one starts meanwhile; those
   * writing are bounded by as many again.
   */
  #free(): number {
    const limit = this.#deps.config.delivery.concurrency;
    return Math.min(limit - this.#delivering, 2 * limit - this.#active.size);
  }

  /** A run's attempts are over: its slot goes to the next message while its outcomes are written. */
  #attemptsOver(run: ActiveRun): void {
    if (!run.delivering) return;
    run.delivering = false;
    this.#delivering--;
    if (!this.#stopped) void this.wake();
  }

  #setTimer(at: number): void {
    if (this.#stopped) return;
    this.#timer?.cancel();
    this.#wakeAt = at;
    this.#timer = this.#clock.timer(at - this.#clock.now(), () => {
      this.#timer = undefined;
      void this.wake();
    });
  }

  #start(claimed: Claimed): void {
    const id = claimed.id;
    const abort = new AbortController();
    const run: ActiveRun = { abort, done: Promise.resolve(), delivering: true };
    this.#active.set(id, run);
    this.#delivering++;
    run.done = this.#run(claimed, run).catch(async (err) => {
      // Corrupt data: the spool moved it to `corrupt` and logged why; it stays for an operator, never retried.
      if (err instanceof CorruptMessageError) return;
      this.#deps.log.write(`delivery of ${id} failed internally: ${errorMessage(err)}`, { id });
      await this.#deps.spool.setState(id, "deferred", {
        from: ["active"],
        nextAttempt: this.#clock.now() + 60_000,
      }).catch(() => {});
    }).finally(() => {
      this.#attemptsOver(run);
      this.#active.delete(id);
      void this.wake();
    });
  }

  /** The route's own event handlers (`routes[].events`) in front of the global ones. */
  #busFor(route: Route | undefined): EventBus {
    if (!route) return this.#deps.events;
    let bus = this.#buses.get(route);
    if (!bus) {
      bus = this.#deps.events.scoped(route.spec.events as Record<string, unknown> | undefined);
      this.#buses.set(route, bus);
    }
    return bus;
  }

  #policy(route: Route): TransportPolicy {
    let p = this.#policies.get(route);
    if (!p) {
      p = transportPolicy(
        this.#deps.config.delivery,
        route.spec,
        this.#deps.hostname,
        this.#deps.tlsContext,
        this.#extraPolicies,
        {
          route: route.index,
          timeoutMs: this.#deps.config.limits.policyTimeout,
          resolver: this.#deps.resolver,
        },
      );
      this.#policies.set(route, p);
    }
    return p;
  }

  #outcomeContext(route: Route | undefined): OutcomeContext {
    return {
      log: this.#deps.log,
      events: this.#busFor(route),
      rulesFor: this.#retryRulesFor,
      now: this.#clock.now(),
      jitter: this.#jitter,
      observer: this.#deps.observer,
    };
  }

  async #run(claimed: Claimed, run: ActiveRun): Promise<void> {
    const { spool } = this.#deps;
    const signal = run.abort.signal;
    const id = claimed.id;
    const forced = this.#forced.delete(id);
    const env = claimed.envelope ?? await spool.get(id);
    if (!env) return;
    const now = this.#clock.now();
    const pending = env.recipients.filter((r) => r.status === "pending");
    // Pulled forward by a flush (its index time is before each pending recipient's own): all of them are due.
    const pulled = claimed.nextAttempt < Math.min(...pending.map((r) => r.nextAttempt ?? 0));
    const due = pending.filter((r) => pulled || (r.nextAttempt ?? 0) <= now);
    if (due.length > 0) {
      // The body is read (and its digest checked) only when something needs it: a group that is tried, or a
      // report; a dead destination's deferrals never read it.
      let read: Promise<Uint8Array> | undefined;
      const data = () =>
        read ??= claimed.data !== undefined
          ? Promise.resolve(claimed.data)
          : claimed.corrupt !== undefined
          ? Promise.reject(
            new CorruptMessageError(id, `Data of message "${id}" is damaged: ${claimed.corrupt}`),
          )
          : spool.readData(id);
      const groups = await this.#groups(due);
      // One slow destination must not hold the others: the groups of a message run side by side. A lone
      // group also writes the message's next state in its own transaction (one commit fewer per message).
      const lone = groups.length === 1;
      let attempting = groups.length;
      const attempted = () => {
        if (--attempting === 0) this.#attemptsOver(run);
      };
      const done = await Promise.all(
        groups.map((g) => this.#deliverGroup(env, data, g, { signal, final: lone, attempted, forced })),
      );
      if (!signal.aborted) await this.#delayWarning(env, data);
      if (lone && done[0]) return;
    }
    this.#attemptsOver(run);
    await this.#finish(env);
  }

  /** Groups by route, then by domain (MX routes) or by route (host routes: one destination). */
  async #groups(due: Recipient[]): Promise<Group[]> {
    const groups = new Map<string, Group>();
    for (const r of due) {
      const domain = domainOf(r.address);
      let route: Route | undefined;
      let routeError: string | undefined;
      try {
        const held = r.extra?.quarantine !== undefined ? this.#quarantineRoute : undefined;
        route = held ?? await findRoute(this.#routes, domain);
      } catch (err) {
        // A host-list function that throws: retry later under the retry rules, like any temporary failure.
        routeError = `routing failed: ${errorMessage(err)}`;
      }
      const key = route && !route.spec.mx
        ? `${route.index}`
        : `${route?.index ?? "-"}|${routeError ? "!" : ""}${domain}`;
      const g = groups.get(key) ?? { key, route, routeError, domain, recipients: [] };
      g.recipients.push(r);
      groups.set(key, g);
    }
    return [...groups.values()];
  }

  /**
   * Delivers one group and saves its outcomes; with `final`, also the message's next state (then true).
   * `attempted` is called once, when the outcomes are known and only their writing remains (or on the way out).
   */
  async #deliverGroup(
    env: Envelope,
    data: () => Promise<Uint8Array>,
    g: Group,
    opts: GroupOptions,
  ): Promise<boolean> {
    let over = false;
    const attempted = () => {
      if (over) return;
      over = true;
      opts.attempted();
    };
    try {
      const tried = await this.#tryGroup(env, data, g, { ...opts, attempted });
      if ("saved" in tried) return tried.saved;
      attempted();
      return await this.#record(env, data, g, tried.outcomes, opts.final);
    } finally {
      attempted();
    }
  }

  /**
   * The group's outcomes without a connection (routing failed, no route, a dead destination), or what trying
   * its destination gave ({@link #tryDestination}).
   */
  async #tryGroup(
    env: Envelope,
    data: () => Promise<Uint8Array>,
    g: Group,
    opts: GroupOptions,
  ): Promise<Tried> {
    const local = (kind: RecipientOutcome["kind"], status: string, text: string, internal = true): Tried => ({
      outcomes: g.recipients.map((recipient) => ({ recipient, kind, status, text, internal })),
    });
    if (g.routeError) return local("deferred", "4.3.0", g.routeError);
    if (!g.route) return local("failed", "5.4.4", `no route for domain "${g.domain}"`);
    const dead = this.#destinations.dead(g.key);
    // Dead-destination throttling: deferred without trying, until the back-off ends.
    if (dead && !opts.forced) return local("deferred", "4.4.1", notTried(dead), false);
    return await this.#tryDestination(env, data, g, g.route, opts);
  }

  /**
   * Tries the group's destination within its concurrency limit. A transaction's outcomes are saved as soon
   * as its replies are in, before its connection is used again (the transport's deliverGroup() calls
   * `record`); the ones it only returns (no host reached) are left to the caller. Stopping before a slot is
   * free leaves the group as it was.
   */
  async #tryDestination(
    env: Envelope,
    data: () => Promise<Uint8Array>,
    g: Group,
    route: Route,
    opts: GroupOptions,
  ): Promise<Tried> {
    const { signal, final, attempted } = opts;
    let release: () => void;
    try {
      release = await this.#destinations.acquire(g.key, signal);
    } catch {
      return { saved: false }; // stopping before it started: left as it was
    }
    let recorded: Promise<boolean> | undefined;
    const record = (transaction: RecipientOutcome[]): Promise<void> => {
      attempted();
      recorded = this.#record(env, data, g, definite(transaction, signal), final);
      return recorded.then(() => {});
    };
    let outcomes: RecipientOutcome[];
    try {
      outcomes = await this.#attempt(env, await data(), g, route, signal, record, opts.forced);
    } finally {
      release();
    }
    this.#noteDestination(g.key, outcomes, signal);
    if (recorded !== undefined) return { saved: await recorded };
    return { outcomes: definite(outcomes, signal) };
  }

  /**
   * Dead-destination bookkeeping after an attempt: any answer clears the destination's failures; only
   * connection failures (no reply, not Ferry's own) count against it, and not when the attempt was stopped.
   */
  #noteDestination(key: string, outcomes: RecipientOutcome[], signal: AbortSignal): void {
    const answered = outcomes.some((o) => o.kind === "delivered" || o.reply !== undefined);
    const connectionFailure = outcomes.every((o) => o.kind === "deferred" && !o.reply && !o.internal);
    if (answered) this.#destinations.succeeded(key);
    else if (connectionFailure && !signal.aborted) this.#destinations.failed(key, outcomes[0]?.text ?? "");
  }

  /**
   * Applies a group's outcomes and writes them, with the reports (RFC 3464) they cause, in one spool
   * transaction; with `final`, also the message's next state. Resolves true when that state was written.
   */
  async #record(
    env: Envelope,
    data: () => Promise<Uint8Array>,
    g: Group,
    outcomes: RecipientOutcome[],
    final: boolean,
  ): Promise<boolean> {
    if (outcomes.length === 0) return false;
    const reports: Reports = { failure: [], success: [], delay: [] };
    const ctx = this.#outcomeContext(g.route);
    const history: string[] = [];
    for (const o of outcomes) history.push(await applyOutcome(env, g.route, o, reports, ctx));
    const built = await this.#buildReports(env, data, reports);
    const update: DeliveryUpdate = {
      id: env.id,
      recipients: outcomes.map((o) => recipientChange(env, o.recipient)),
      reports: built,
      history,
    };
    if (final) Object.assign(update, this.#nextState(env));
    const saved = await this.#save(update);
    this.#reportsQueued(env, built);
    if (final && saved) this.#completed(env);
    return final;
  }

  /** The message's next state from its recipients, and its outbound state. */
  #nextState(env: Envelope): Pick<DeliveryUpdate, "state" | "delivery"> {
    const pending = env.recipients.some((r) => r.status === "pending");
    const tried = env.recipients.some((r) => (r.attempts ?? 0) > 0);
    return { state: pending ? (tried ? "deferred" : "incoming") : "done", delivery: env.delivery };
  }

  /** Logs completion when nothing is pending any more. */
  #completed(env: Envelope): void {
    if (env.recipients.some((r) => r.status === "pending")) return;
    this.#deps.log.write("Completed", { id: env.id, event: "Completed" });
    this.#deps.events.emit("msg:complete", { id: env.id, sender: env.sender });
  }

  async #attempt(
    env: Envelope,
    data: Uint8Array,
    g: Group,
    route: Route,
    signal: AbortSignal,
    record: (outcomes: RecipientOutcome[]) => Promise<void>,
    forced = false,
  ): Promise<RecipientOutcome[]> {
    const { log } = this.#deps;
    const events = this.#busFor(route);
    const deliver = this.#deps.deliver ?? deliverGroup;
    const deps: Parameters<typeof deliverGroup>[6] = {
      resolver: this.#deps.resolver,
      pool: this.#pool,
      hostRetry: this.#hostRetry,
      ignoreBackoff: forced,
      events,
      self: this.#self,
      signal,
      record,
      onHostError: (target, err) => {
        log.write(
          `H=${target.name} [${target.ip}]:${target.port} ${err.message} (errno ${err.errno})`,
          { id: env.id, event: "host_error", host: target.name, errno: err.errno },
        );
        events.emit("msg:host:defer", {
          ...deliveryFacts(env, route.name),
          host: { host: target.name, address: target.ip, port: target.port },
          error: err.message,
          errno: err.errno,
          security: err.security,
        });
      },
      // A report's own delivery is not reported on (RFC 8460 §5.3).
      onTlsResult: String(env.delivery?.kind ?? "").startsWith(TLS_RPT_KIND_PREFIX)
        ? undefined
        : (e) => void this.#tlsRpt?.record(e),
    };
    const chain = this.#deps.outbound ?? [];
    if (chain.length === 0) {
      return await deliver(env, data, g.recipients, route, g.domain, this.#policy(route), deps);
    }
    // The outbound chain (SRS, DKIM signing, ARC sealing, config.ts steps) prepares what is sent.
    const prepared = await prepareDelivery(
      env,
      data,
      g.recipients,
      { name: route.name, index: route.index, mx: route.spec.mx === true },
      g.domain,
      {
        chain,
        hostname: this.#deps.hostname,
        resolver: this.#deps.resolver,
        log,
        timeoutMs: this.#deps.config.limits.policyTimeout,
      },
    );
    if (!prepared.ok) {
      return g.recipients.map((recipient) => ({
        recipient,
        kind: prepared.temporary ? "deferred" : "failed",
        status: prepared.status,
        text: prepared.text,
        internal: true,
      }));
    }
    // deliverGroup answers in the order of the recipients it was given: map back to the spooled ones.
    const spooled = (outcomes: RecipientOutcome[]) =>
      outcomes.map((o, i) => ({ ...o, recipient: g.recipients[i] }));
    const outcomes = await deliver(
      prepared.envelope,
      prepared.data,
      prepared.recipients,
      route,
      g.domain,
      this.#policy(route),
      { ...deps, record: (outcomes) => record(spooled(outcomes)) },
    );
    return spooled(outcomes);
  }

  /**
   * Writes an update, retrying while the spool refuses (disk full, I/O error): the outcomes it carries are
   * never dropped, so recipients that got 250 are never sent again while this process runs. Resolves false
   * when the message is gone (deleted by an operator meanwhile).
   */
  async #save(update: DeliveryUpdate): Promise<boolean> {
    let delay = 1000;
    for (;;) {
      try {
        await this.#deps.spool.apply(update);
        return true;
      } catch (err) {
        const text = errorMessage(err);
        if (/^No queued message/.test(text)) return false;
        if (this.#stopped) {
          this.#deps.log.write(
            `spool write for ${update.id} failed at shutdown: ${text}; its outcomes are lost and may be repeated`,
            { id: update.id },
          );
          return false;
        }
        this.#deps.log.write(`spool write for ${update.id} failed: ${text}; retrying in ${delay / 1000}s`, {
          id: update.id,
          event: "spool_error",
        });
        await new Promise<void>((resolve) => this.#clock.timer(delay, resolve));
        delay = Math.min(delay * 2, 30_000);
      }
    }
  }

  /** Leaves the message in its next state: removed when nothing is pending, else deferred (or incoming). */
  async #finish(env: Envelope): Promise<void> {
    if (await this.#save({ id: env.id, ...this.#nextState(env) })) this.#completed(env);
  }

  async #buildReports(
    env: Envelope,
    data: () => Promise<Uint8Array>,
    reports: Reports,
  ): Promise<NewMessage[]> {
    const out: NewMessage[] = [];
    for (const kind of ["failure", "delay", "success"] as const) {
      if (reports[kind].length === 0) continue;
      const original = await data();
      const report = buildDsn({
        kind,
        reportingMta: this.#deps.hostname,
        envelope: env,
        recipients: reports[kind],
        original,
      });
      out.push({
        envelope: reportEnvelope({
          id: this.#deps.spool.newId(),
          original: env,
          kind,
          size: report.length,
          receivedAt: this.#clock.now(),
          hostname: this.#deps.hostname,
        }),
        data: report,
      });
    }
    return out;
  }

  #reportsQueued(env: Envelope, built: NewMessage[]): void {
    for (const { envelope, data } of built) {
      const kind = envelope.delivery?.kind;
      this.#deps.log.write(
        `<= <> R=${env.id} U=ferry P=local S=${data.length} for ${env.sender} (${kind} report)`,
        { id: envelope.id, event: "<=" },
      );
    }
    if (built.length > 0) void this.wake();
  }

  /** A delay report once per `delivery.delayWarning` interval while recipients are still pending. */
  async #delayWarning(env: Envelope, data: () => Promise<Uint8Array>): Promise<void> {
    const every = this.#deps.config.delivery.delayWarning;
    const pending = env.recipients.filter((r) => r.status === "pending");
    if (pending.length === 0 || every <= 0) return;
    const intervals = Math.floor((this.#clock.now() - env.receivedAt) / every);
    const delivery = (env.delivery ??= {});
    const sent = typeof delivery.delayWarnings === "number" ? delivery.delayWarnings : 0;
    if (intervals <= sent) return;
    delivery.delayWarnings = intervals;
    const reports = await delayReports(env, pending, {
      rulesFor: this.#retryRulesFor,
      now: this.#clock.now(),
      extraOf: (r) => (r.extra ?? {}) as RecipientExtra,
    });
    // The report and "warned" in one transaction: never lost, never sent twice.
    const built = await this.#buildReports(env, data, reports);
    await this.#save({ id: env.id, delivery, reports: built });
    this.#reportsQueued(env, built);
  }

  /**
   * Stops claiming messages, aborts deliveries in flight (their completed recipients are saved, the rest
   * stays queued as it was), waits for them up to `graceMs`, and closes idle connections.
   */
  async stop(graceMs: number): Promise<void> {
    this.#stopped = true;
    this.#timer?.cancel();
    this.#timer = undefined;
    for (const run of this.#active.values()) run.abort.abort(new Error("Ferry is stopping"));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finished = await Promise.race([
      Promise.allSettled([...this.#active.values()].map((r) => r.done)).then(() => true),
      new Promise<false>((r) => (timer = setTimeout(() => r(false), graceMs))),
    ]);
    clearTimeout(timer);
    if (!finished) {
      this.#deps.log.write(
        `${this.#active.size} delivery run(s) still in progress at shutdown: their recipients stay queued and ` +
          `may be delivered again after restart`,
      );
    }
    await this.#pool.close();
  }
}
