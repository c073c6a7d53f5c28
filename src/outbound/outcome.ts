/**
 * What one recipient's delivery outcome changes: its state (delivered, deferred under the retry rules with
 * jitter, or failed), the Exim-style log line and event, and the DSN entry a report needs (RFC 3464).
 * Pure of I/O except the logger and the event bus; the queue manager writes the result to the spool.
 */

import type { Envelope, Recipient } from "../core/envelope.ts";
import type { Logger } from "../core/log.ts";
import { normalizeName } from "../core/host_list.ts";
import type { EventBus } from "../events/bus.ts";
import type { DeliveryFacts } from "../events/types.ts";
import type { RecipientChange } from "../spool/spool.ts";
import { replyText } from "../smtp/reply_parser.ts";
import type { RecipientOutcome } from "./deliver.ts";
import { type DsnKind, type DsnRecipient, shouldSendDsn } from "./dsn_report.ts";
import { nextRetry, type RetryRule } from "./retry_rules.ts";
import type { Route } from "./routing.ts";
import type { Observer } from "../core/observer.ts";

/** Report entries collected while applying outcomes, by kind. */
export type Reports = Record<DsnKind, DsnRecipient[]>;

/** Per-recipient outbound state kept in `recipient.extra`. */
export interface RecipientExtra {
  firstFailure?: number;
  lastInterval?: number;
  /** The host that answered last (for a delay report's Remote-MTA) */
  remoteMta?: string;
  /** Its diagnostic with type, `smtp; 450 4.2.0 …` (for a delay report's Diagnostic-Code) */
  diagnostic?: string;
  /** The last attempt's TLS: the security decision (`TLS=` in the log) and what the session achieved */
  tls?: RecipientTls;
  /** The peer's last reply to this recipient (`250 2.0.0 OK …`), absent when none came */
  reply?: string;
}

/** The TLS of a recipient's last attempt, as the dashboard and the API show it. */
export interface RecipientTls {
  /** dane, mta-sts(enforce), pkix, opportunistic, encrypted, none (absent when no policy was reached) */
  policy?: string;
  /** Exim's CV=: yes, no, dane; "none" without TLS */
  cv: "yes" | "no" | "dane" | "none";
  version?: string;
  cipher?: string;
}

/** What applying an outcome needs. */
export interface OutcomeContext {
  log: Logger;
  events: EventBus;
  /** The retry rules of a recipient's domain */
  rulesFor(domain: string): Promise<RetryRule[] | undefined>;
  now: number;
  /** Adds jitter to a retry time: `(at, interval) => at'` with at ≤ at' */
  jitter(at: number, interval: number): number;
  /** Internal hooks for metrics and the dashboard */
  observer?: Observer;
}

/** The lower-cased domain of an address. */
export function domainOf(address: string): string {
  const at = address.lastIndexOf("@");
  return at < 0 ? "" : normalizeName(address.slice(at + 1));
}

/** The event facts of a delivery. */
export function deliveryFacts(env: Envelope, router: string, o?: RecipientOutcome): DeliveryFacts {
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

/** The spool change for a recipient as it now stands. */
export function recipientChange(env: Envelope, r: Recipient): RecipientChange {
  return {
    index: env.recipients.indexOf(r),
    status: r.status,
    attempts: r.attempts ?? 0,
    lastError: r.lastError ?? null,
    nextAttempt: r.nextAttempt ?? null,
    extra: r.extra,
  };
}

/**
 * Applies one outcome to its recipient (mutating it), logs it, fires its event and adds the report entry it
 * calls for. Returns the history line.
 */
export async function applyOutcome(
  env: Envelope,
  route: Route | undefined,
  o: RecipientOutcome,
  reports: Reports,
  ctx: OutcomeContext,
): Promise<string> {
  const { log, events, now } = ctx;
  const r = o.recipient;
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
  // What this attempt met, for every outcome (the message page shows it beside the status); an attempt that
  // got no TLS decision (routing, a refused connection) clears what an earlier one recorded.
  const seen = (r.extra ??= {}) as RecipientExtra;
  seen.tls = o.tls || o.security || o.kind === "delivered"
    ? { policy: o.security?.policy, cv: o.tls?.cv ?? "none", version: o.tls?.version, cipher: o.tls?.cipher }
    : undefined;
  seen.reply = o.reply ? replyText(o.reply) : undefined;
  seen.remoteMta = remoteMta;
  const obs = ctx.observer;
  if (o.host || o.tls) {
    obs?.outboundTls(o.tls?.cv ?? "none", {
      // The session got as far as TLS (or delivered without it); a refused connection says nothing of TLS.
      reached: o.tls !== undefined || o.kind === "delivered",
      destination: domainOf(r.address),
      host: o.host?.host,
      version: o.tls?.version,
      cipher: o.tls?.cipher,
      text: o.text,
      policy: o.security?.policy,
    });
  }
  if (o.kind === "delivered") {
    r.status = "delivered";
    obs?.delivery(router, "delivered", now - env.receivedAt);
    const line = `=> ${r.address} R=${router} T=smtp${where}${x}${sec} C="${o.text.replace(/"/g, "'")}"`;
    log.write(line, { id: env.id, event: "=>", recipient: r.address, host: o.host?.host });
    events.emit("msg:delivery", { ...deliveryFacts(env, router, o), confirmation: o.text });
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
    return line;
  }
  let failed = o.kind === "failed";
  let text = o.text;
  if (!failed) {
    const extra = (r.extra ??= {}) as RecipientExtra;
    extra.firstFailure ??= now;
    extra.remoteMta = remoteMta;
    extra.diagnostic = diagnostic ?? `x-ferry; ${o.text}`;
    const rules = await ctx.rulesFor(domainOf(r.address)) ?? [];
    const decision = nextRetry(rules, extra.firstFailure, now, extra.lastInterval);
    if ("giveUp" in decision) {
      failed = true;
      text = `retry timeout exceeded (last error: ${o.text})`;
    } else {
      const interval = decision.at - now;
      extra.lastInterval = interval;
      r.nextAttempt = ctx.jitter(decision.at, interval);
      obs?.delivery(router, "deferred");
      const line = `== ${r.address} R=${router} T=smtp defer${where}${sec}: ${o.text}`;
      log.write(line, { id: env.id, event: "==", recipient: r.address });
      return line;
    }
  }
  r.status = "failed";
  obs?.delivery(router, "bounced");
  const line = `** ${r.address} R=${router} T=smtp${where}: ${text}`;
  log.write(line, { id: env.id, event: "**", recipient: r.address });
  events.emit(o.internal ? "msg:fail:internal" : "msg:fail:delivery", {
    ...deliveryFacts(env, router, o),
    error: text,
  });
  if (shouldSendDsn(env, r, "failure")) {
    reports.failure.push({
      recipient: r,
      action: "failed",
      // A REQUIRETLS message deferred only for security reasons (deliver.ts: 4.7.10) fails with 5.7.10.
      status: /^5\./.test(o.status) ? o.status : o.status === "4.7.10" ? "5.7.10" : "5.4.7",
      remoteMta,
      diagnostic: diagnostic ?? `x-ferry; ${text}`,
      lastAttempt: new Date(now),
    });
  }
  return line;
}
