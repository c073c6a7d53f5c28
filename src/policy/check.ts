/**
 * The check API for built-ins (maddy's check.go): a check is made once by a factory in config.ts
 * (`checks: [spf(), dkim(), dmarc({ … })]`), opened at start with Ferry's services, and creates one state
 * object per message at MAIL FROM with a method per stage it needs. Methods return verdicts as values —
 * accept, reject, defer or quarantine — each with a reason and Authentication-Results fragments; Ferry
 * merges every check's fragments into one Authentication-Results header (RFC 8601) at the data stage.
 *
 * Order: at each stage, relay control (rcpt) runs first, then every check's method in the order listed,
 * then the plain middleware of `policy.<stage>`. A check later in the list sees what earlier ones set with
 * `c.set` (DMARC reads `c.get("spf")` and `c.get("dkim")`). A method that throws, or runs past
 * `limits.policyTimeout`, becomes 451 4.3.0 naming the check.
 */

import type { Logger } from "../core/log.ts";
import type { Resolver } from "../dns/resolver.ts";
import type { DmarcReportSink } from "./dmarc_history.ts";
import type { RedisService } from "./redis_service.ts";
import type {
  ConnectContext,
  DataContext,
  HeloContext,
  MailContext,
  PrdrContext,
  RcptContext,
} from "./context.ts";

/** What a check decides. `accept` lets the stage go on; the others end it (quarantine: see README). */
export type VerdictAction = "accept" | "reject" | "defer" | "quarantine";

/** A check's result for one stage. */
export interface Verdict {
  action: VerdictAction;
  /** Reply text for reject/defer, log text for all */
  reason?: string;
  /** SMTP code for reject (default 550) and defer (default 451) */
  code?: number;
  /** RFC 3463 status for reject (default 5.7.1) and defer (default 4.7.1) */
  enhanced?: string;
  /** Authentication-Results method results, e.g. `spf=pass smtp.mailfrom=example.org` (RFC 8601 2.2) */
  authResults?: string[];
  /** Header fields to add to the stored message (given at any stage, added at the data stage) */
  headers?: { name: string; value: string }[];
  /**
   * A quarantine at the data stage for these recipients only (per-recipient verdicts without PRDR); the
   * others are delivered normally
   */
  recipients?: readonly string[];
}

/** Optional verdict details. */
export type VerdictDetails = Omit<Verdict, "action" | "reason">;

/** The message may go on (results and headers still recorded). */
export function accept(details: VerdictDetails = {}): Verdict {
  return { action: "accept", ...details };
}
/** Permanent refusal (default 550 5.7.1). */
export function reject(reason: string, details: VerdictDetails = {}): Verdict {
  return { action: "reject", reason, ...details };
}
/** Temporary refusal (default 451 4.7.1). */
export function defer(reason: string, details: VerdictDetails = {}): Verdict {
  return { action: "defer", reason, ...details };
}
/** Accept but hold the message (from mail/data) or this recipient (from rcpt/prdr) for review. */
export function quarantine(reason: string, details: VerdictDetails = {}): Verdict {
  return { action: "quarantine", reason, ...details };
}

/** What a check method may return. */
export type CheckResult = Verdict | void | undefined | Promise<Verdict | void | undefined>;

/** Services a check reaches at start (`open`); augment the interface to add stores (Redis, rate limits). */
export interface Services {
  /** Ferry's DNS resolver */
  resolver: Resolver;
  /** The main log */
  log: Logger;
  /** Our host name (the default authserv-id) */
  hostname: string;
  /** The authserv-id of our Authentication-Results (RFC 8601 2.5) */
  authservId: string;
  /** True when a quarantine verdict has somewhere to go (`quarantine.route`); false makes it defer */
  canQuarantine?: boolean;
  /** Where DMARC results go for reports (`dmarc.reports`), when configured */
  dmarcReports?: DmarcReportSink;
  /** The Redis connections (`redis`), when configured: shared state for rate limits and lookups */
  redis?: RedisService;
}

/** One check's per-message state: a method per stage it needs. */
export interface CheckState {
  mail?(c: MailContext): CheckResult;
  rcpt?(c: RcptContext): CheckResult;
  data?(c: DataContext): CheckResult;
  /** Per recipient after data, when the client asked for PRDR */
  prdr?(c: PrdrContext): CheckResult;
}

/** A check as a factory returns it. */
export interface Check {
  /** Shown in logs and timeouts (`check spf`) */
  readonly name: string;
  /** Called once at start, before any connection: open stores, load keys; throw to stop start-up */
  open?(services: Services): void | Promise<void>;
  /** Called once at stop */
  close?(): void | Promise<void>;
  /** Per connection, before any message */
  connect?(c: ConnectContext): CheckResult;
  helo?(c: HeloContext): CheckResult;
  /** Creates the per-message state at MAIL FROM (before `mail` is called on it) */
  message?(c: MailContext): CheckState | Promise<CheckState>;
}
