/**
 * The queue runner: picks due messages from the spool, groups pending recipients by route and destination,
 * delivers each group in one transaction, and writes every recipient's new state to the spool before moving
 * on, so a recipient that got 250 is never sent again after a restart. Deferrals follow the retry rules;
 * past the last rule a recipient fails. Failure, delay and success reports (RFC 3464) go to the sender as new
 * messages from the null sender.
 */

import type { Envelope, Recipient } from "../core/envelope.ts";
import type { Logger } from "../core/log.ts";
import { normalizeName } from "../core/host_list.ts";
import type { ResolvedConfig } from "../config/schema.ts";
import type { Resolver } from "../dns/resolver.ts";
import type { EventBus } from "../events/bus.ts";
import type { DeliveryFacts } from "../events/types.ts";
import { CorruptMessageError, type Spool } from "../spool/spool.ts";
import type { TlsClientContext } from "../tls/client.ts";
import { ConnectionPool } from "./connection_pool.ts";
import { deliverGroup, type RecipientOutcome } from "./deliver.ts";
import { buildDsn, type DsnKind, type DsnRecipient, shouldSendDsn } from "./dsn_report.ts";
import { HostRetry } from "./host_retry.ts";
import { compileRetryConfig, nextRetry, type RetryRule } from "./retry_rules.ts";
import { compileRoutes, findRoute, type Route, type RouteSpec, type SelfInfo } from "./routing.ts";
import { type TransportPolicy, transportPolicy } from "./transport.ts";
import { errorMessage } from "../core/error_message.ts";
import { replyText } from "../smtp/reply_parser.ts";
import type { OutboundStep } from "../policy/delivery_context.ts";
import { prepareDelivery } from "./outbound_chain.ts";

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
  /** The outbound chain: built-in steps (DKIM signing) then `outbound` from config.ts */
  outbound?: readonly OutboundStep[];
}

/** Recipients that go to one destination together. */
interface Group {
  route?: Route;
  /** Set when finding the route failed */
  routeError?: string;
  domain: string;
  recipients: Recipient[];
}

/** Report entries collected while applying outcomes, by kind. */
type Reports = Record<DsnKind, DsnRecipient[]>;

interface Extra {
  firstFailure?: number;
  lastInterval?: number;
  /** The host that answered last (for a delay report's Remote-MTA) */
  remoteMta?: string;
  /** Its diagnostic with type, `smtp; 450 4.2.0 …` (for a delay report's Diagnostic-Code) */
  diagnostic?: string;
}

function domainOf(address: string): string {
  const at = address.lastIndexOf("@");
  return at < 0 ? "" : normalizeName(address.slice(at + 1));
}

/** Runs deliveries from the spool. */
export class Scheduler {
  #deps: SchedulerDeps;
  #routes: Route[];
  /** Where quarantined recipients go (`quarantine.route`) */
  #quarantineRoute?: Route;
  #policies = new Map<Route, TransportPolicy>();
  #buses = new Map<Route, EventBus>();
  #pool: ConnectionPool;
  #hostRetry: HostRetry;
  #retryRulesFor: (domain: string) => Promise<RetryRule[] | undefined>;
  #self: SelfInfo;
  /** Message id → when it is next due */
  #due = new Map<string, number>();
  #active = new Set<string>();
  #running = new Set<Promise<void>>();
  #timer?: ReturnType<typeof setTimeout>;
  #stopped = false;

  constructor(deps: SchedulerDeps) {
    this.#deps = deps;
    const d = deps.config.delivery;
    const timeoutMs = deps.config.limits.policyTimeout;
    this.#routes = compileRoutes(deps.config.routes as RouteSpec[], { timeoutMs });
    const q = deps.config.quarantine?.route;
    this.#quarantineRoute = q === undefined ? undefined : this.#routes.find((r) => r.name === q);
    this.#pool = new ConnectionPool({ perHost: d.connectionsPerHost, idleTimeoutMs: d.idleTimeout });
    this.#hostRetry = new HostRetry({ baseMs: d.hostRetryBase, maxMs: d.hostRetryMax });
    this.#retryRulesFor = compileRetryConfig(deps.config.retry, { timeoutMs });
    this.#self = { names: [normalizeName(deps.hostname)], endpoints: deps.endpoints };
  }

  /** Number of messages waiting or in progress. */
  get size(): number {
    return this.#due.size;
  }

  /** Loads the queue from the spool and starts the queue runner. */
  async start(): Promise<void> {
    for (const { envelope } of await this.#deps.spool.list()) this.#schedule(envelope);
    this.#tick();
  }

  /** Queues a message now (called when one was received). */
  enqueue(id: string): void {
    if (this.#stopped) return;
    this.#due.set(id, 0);
    this.#pump();
  }

  /** Due at the earliest pending recipient's next attempt; at once when none is pending (to complete it). */
  #schedule(env: Envelope): void {
    let at = Infinity;
    for (const r of env.recipients) if (r.status === "pending") at = Math.min(at, r.nextAttempt ?? 0);
    this.#due.set(env.id, at === Infinity ? 0 : at);
  }

  #tick(): void {
    if (this.#stopped) return;
    this.#pump();
    const next = Math.min(this.#deps.config.delivery.queueInterval, this.#nextDueIn());
    this.#timer = setTimeout(() => this.#tick(), Math.max(50, next));
    this.#timer.unref?.();
  }

  #nextDueIn(): number {
    let min = Infinity;
    const now = Date.now();
    for (const [id, at] of this.#due) if (!this.#active.has(id)) min = Math.min(min, at - now);
    return min;
  }

  #pump(): void {
    if (this.#stopped) return;
    const now = Date.now();
    const limit = this.#deps.config.delivery.concurrency;
    for (const [id, at] of this.#due) {
      if (this.#active.size >= limit) break;
      if (at > now || this.#active.has(id)) continue;
      this.#active.add(id);
      const p = this.#run(id).catch((err) => {
        if (err instanceof CorruptMessageError) {
          // The spool moved it to `corrupt` and logged why: it stays there for an operator, never retried.
          this.#due.delete(id);
          return;
        }
        this.#deps.log.write(
          `delivery of ${id} failed internally: ${errorMessage(err)}`,
          { id },
        );
        this.#due.set(id, Date.now() + 60_000);
      }).finally(() => {
        this.#active.delete(id);
        this.#running.delete(p);
        this.#pump();
      });
      this.#running.add(p);
    }
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
        [],
        {
          route: route.index,
          timeoutMs: this.#deps.config.limits.policyTimeout,
        },
      );
      this.#policies.set(route, p);
    }
    return p;
  }

  async #run(id: string): Promise<void> {
    const { spool, log } = this.#deps;
    const env = await spool.get(id);
    if (!env) {
      this.#due.delete(id);
      return;
    }
    // A message on hold (quarantined, or parked by an operator) is not delivered until it is released.
    if ((await spool.row(id))?.state === "hold") {
      this.#due.delete(id);
      return;
    }
    const now = Date.now();
    const due = env.recipients.filter((r) => r.status === "pending" && (r.nextAttempt ?? 0) <= now);
    const data = due.length ? await spool.readData(id) : new Uint8Array();
    // Group by route, then by domain (MX routes) or by route (host routes: one destination).
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
      // Host routes have one destination whatever the domain; MX routes one per domain.
      const key = route && !route.spec.mx
        ? `${route.index}`
        : `${route?.index ?? "-"}|${routeError ? "!" : ""}${domain}`;
      const g = groups.get(key) ?? { route, routeError, domain, recipients: [] };
      g.recipients.push(r);
      groups.set(key, g);
    }
    for (const g of groups.values()) {
      // Stopping: leave the remaining groups queued rather than start them.
      if (this.#stopped) break;
      const local = (kind: RecipientOutcome["kind"], status: string, text: string): RecipientOutcome[] =>
        g.recipients.map((recipient) => ({ recipient, kind, status, text, internal: true }));
      let outcomes: RecipientOutcome[];
      if (g.routeError) outcomes = local("deferred", "4.3.0", g.routeError);
      else if (!g.route) outcomes = local("failed", "5.4.4", `no route for domain "${g.domain}"`);
      else {
        const route = g.route;
        outcomes = await this.#deliver(env, data, g.recipients, route, g.domain, {
          resolver: this.#deps.resolver,
          pool: this.#pool,
          hostRetry: this.#hostRetry,
          events: this.#busFor(route),
          self: this.#self,
          onHostError: (target, err) => {
            log.write(
              `H=${target.name} [${target.ip}]:${target.port} ${err.message} (errno ${err.errno})`,
              { id, event: "host_error", host: target.name, errno: err.errno },
            );
            this.#busFor(route).emit("msg:host:defer", {
              ...this.#facts(env, route.name),
              host: { host: target.name, address: target.ip, port: target.port },
              error: err.message,
              errno: err.errno,
              security: err.security,
            });
          },
        });
      }
      const reports: Reports = { failure: [], success: [], delay: [] };
      try {
        for (const o of outcomes) await this.#apply(env, g.route, o, reports);
        // Reports are queued before the new states are saved: a crash in between repeats a report, never loses one.
        await this.#reports(env, data, reports);
      } finally {
        // Durable before the next group: a delivered recipient is never delivered again.
        await spool.update(env);
      }
    }
    await this.#delayWarning(env, data);
    if (env.recipients.every((r) => r.status !== "pending")) {
      await spool.remove(id);
      this.#due.delete(id);
      log.write("Completed", { id, event: "Completed" });
      this.#deps.events.emit("msg:complete", { id, sender: env.sender });
    } else {
      this.#schedule(env);
    }
  }

  /** Runs the outbound chain for a group, then delivers what it produced; outcomes name the spooled recipients. */
  async #deliver(
    env: Envelope,
    data: Uint8Array,
    recipients: Recipient[],
    route: Route,
    domain: string,
    deps: Parameters<typeof deliverGroup>[6],
  ): Promise<RecipientOutcome[]> {
    const chain = this.#deps.outbound ?? [];
    if (chain.length === 0) {
      return await deliverGroup(env, data, recipients, route, domain, this.#policy(route), deps);
    }
    const prepared = await prepareDelivery(
      env,
      data,
      recipients,
      { name: route.name, index: route.index, mx: route.spec.mx === true },
      domain,
      {
        chain,
        hostname: this.#deps.hostname,
        resolver: this.#deps.resolver,
        log: this.#deps.log,
        timeoutMs: this.#deps.config.limits.policyTimeout,
      },
    );
    if (!prepared.ok) {
      return recipients.map((recipient) => ({
        recipient,
        kind: prepared.temporary ? "deferred" : "failed",
        status: prepared.status,
        text: prepared.text,
        internal: true,
      }));
    }
    const outcomes = await deliverGroup(
      prepared.envelope,
      prepared.data,
      prepared.recipients,
      route,
      domain,
      this.#policy(route),
      deps,
    );
    // deliverGroup answers in the order of the recipients it was given: map back to the spooled ones.
    return outcomes.map((o, i) => ({ ...o, recipient: recipients[i] }));
  }

  #facts(env: Envelope, router: string, o?: RecipientOutcome): DeliveryFacts {
    return {
      id: env.id,
      sender: env.sender,
      recipient: o?.recipient.address,
      router,
      transport: "smtp",
      host: o?.host,
      tls: o?.tls,
      security: o?.security,
      sendingIp: o?.sendingIp,
      sendingPort: o?.sendingPort,
    };
  }

  async #apply(
    env: Envelope,
    route: Route | undefined,
    o: RecipientOutcome,
    reports: Reports,
  ): Promise<void> {
    const { log } = this.#deps;
    const events = this.#busFor(route);
    const r = o.recipient;
    const now = Date.now();
    const router = route?.name ?? "none";
    const where = o.host ? ` H=${o.host.host} [${o.host.address}]:${o.host.port}` : "";
    const x = o.tls ? ` X=${o.tls.version}:${o.tls.cipher}:${o.tls.bits} CV=${o.tls.cv}` : "";
    // Bare values: buildDsn adds the "dns; " type to Remote-MTA; replyText already starts with the code.
    const remoteMta = o.host?.host;
    const diagnostic = o.reply ? `smtp; ${replyText(o.reply)}` : undefined;
    const sec = o.security
      ? ` TLS=${o.security.policy}${o.security.tlsaUsage ? `(${o.security.tlsaUsage})` : ""}`
      : "";
    r.attempts = (r.attempts ?? 0) + 1;
    r.lastError = o.kind === "delivered" ? undefined : o.text;
    if (o.kind === "delivered") {
      r.status = "delivered";
      log.write(`=> ${r.address} R=${router} T=smtp${where}${x}${sec} C="${o.text.replace(/"/g, "'")}"`, {
        id: env.id,
        event: "=>",
        recipient: r.address,
        host: o.host?.host,
      });
      events.emit("msg:delivery", { ...this.#facts(env, router, o), confirmation: o.text });
      // dsnLasthop: the parameters were not passed on and delivery ends DSN processing: "delivered".
      const lasthop = route?.spec.dsnLasthop === true;
      if (!o.dsnPassed && shouldSendDsn(env, r, "success")) {
        reports.success.push({
          recipient: r,
          action: lasthop ? "delivered" : "relayed",
          status: o.status.startsWith("2.") ? o.status : "2.0.0",
          remoteMta,
          diagnostic,
          lastAttempt: new Date(now),
        });
      }
      return;
    }
    let failed = o.kind === "failed";
    let text = o.text;
    if (!failed) {
      const extra = (r.extra ??= {}) as Extra;
      extra.firstFailure ??= now;
      extra.remoteMta = remoteMta;
      extra.diagnostic = diagnostic ?? `x-ferry; ${o.text}`;
      const rules = await this.#retryRulesFor(domainOf(r.address)) ?? [];
      const decision = nextRetry(rules, extra.firstFailure, now, extra.lastInterval);
      if ("giveUp" in decision) {
        failed = true;
        text = `retry timeout exceeded (last error: ${o.text})`;
      } else {
        extra.lastInterval = decision.at - now;
        r.nextAttempt = decision.at;
        log.write(`== ${r.address} R=${router} T=smtp defer${where}${sec}: ${o.text}`, {
          id: env.id,
          event: "==",
          recipient: r.address,
        });
        return;
      }
    }
    r.status = "failed";
    log.write(`** ${r.address} R=${router} T=smtp${where}: ${text}`, {
      id: env.id,
      event: "**",
      recipient: r.address,
    });
    events.emit(o.internal ? "msg:fail:internal" : "msg:fail:delivery", {
      ...this.#facts(env, router, o),
      error: text,
    });
    if (shouldSendDsn(env, r, "failure")) {
      reports.failure.push({
        recipient: r,
        action: "failed",
        status: /^5\./.test(o.status) ? o.status : "5.4.7",
        remoteMta,
        diagnostic: diagnostic ?? `x-ferry; ${text}`,
        lastAttempt: new Date(now),
      });
    }
  }

  async #queueReport(env: Envelope, report: Uint8Array, kind: string): Promise<void> {
    const { spool, log } = this.#deps;
    const id = spool.newId();
    const now = Date.now();
    const dsnEnv: Envelope = {
      id,
      sender: "",
      recipients: [{ address: env.sender, status: "pending" }],
      size: report.length,
      receivedAt: now,
      protocol: "local",
      client: { ip: "127.0.0.1", port: 0 },
      receivedBy: this.#deps.hostname,
      delivery: { reportFor: env.id, kind },
    };
    await spool.store(dsnEnv, report);
    log.write(`<= <> R=${env.id} U=ferry P=local S=${report.length} for ${env.sender} (${kind} report)`, {
      id,
      event: "<=",
    });
    this.enqueue(id);
  }

  async #reports(env: Envelope, data: Uint8Array, reports: Reports): Promise<void> {
    for (const kind of ["failure", "delay", "success"] as const) {
      if (reports[kind].length === 0) continue;
      const report = buildDsn({
        kind,
        reportingMta: this.#deps.hostname,
        envelope: env,
        recipients: reports[kind],
        original: data,
      });
      await this.#queueReport(env, report, kind);
    }
  }

  /** A delay report once per `delivery.delayWarning` interval while recipients are still pending. */
  async #delayWarning(env: Envelope, data: Uint8Array): Promise<void> {
    const every = this.#deps.config.delivery.delayWarning;
    const pending = env.recipients.filter((r) => r.status === "pending");
    if (pending.length === 0 || every <= 0) return;
    const intervals = Math.floor((Date.now() - env.receivedAt) / every);
    const delivery = (env.delivery ??= {});
    const sent = typeof delivery.delayWarnings === "number" ? delivery.delayWarnings : 0;
    if (intervals <= sent) return;
    delivery.delayWarnings = intervals;
    const reports: Reports = { failure: [], success: [], delay: [] };
    for (const r of pending) {
      if (!shouldSendDsn(env, r, "delay")) continue;
      const rules = await this.#retryRulesFor(domainOf(r.address)) ?? [];
      const extra = (r.extra ?? {}) as Extra;
      const first = extra.firstFailure ?? env.receivedAt;
      const last = rules.length ? rules[rules.length - 1].until : 0;
      reports.delay.push({
        recipient: r,
        action: "delayed",
        status: "4.4.7",
        remoteMta: extra.remoteMta,
        diagnostic: extra.diagnostic ?? (r.lastError ? `x-ferry; ${r.lastError}` : undefined),
        lastAttempt: new Date(),
        willRetryUntil: new Date(first + last),
      });
    }
    // As for failures: the report is queued before "warned" is saved, so it is never lost.
    await this.#reports(env, data, reports);
    await this.#deps.spool.update(env);
  }

  /** Stops picking messages, waits for deliveries in progress (up to `graceMs`), closes idle connections. */
  async stop(graceMs: number): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finished = await Promise.race([
      Promise.allSettled([...this.#running]).then(() => true),
      new Promise<false>((r) => (timer = setTimeout(() => r(false), graceMs))),
    ]);
    clearTimeout(timer);
    if (!finished) {
      this.#deps.log.write(
        `${this.#running.size} delivery run(s) still in progress at shutdown: their recipients stay queued and ` +
          `may be delivered again after restart`,
      );
    }
    await this.#pool.close();
  }
}
