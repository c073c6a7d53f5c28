/**
 * The entries of a delay report (RFC 3464 `Action: delayed`) for a message's pending recipients that asked
 * for one (NOTIFY=DELAY, or no NOTIFY), with the last host and reply each deferral named.
 */

import type { Envelope, Recipient } from "../core/envelope.ts";
import { shouldSendDsn } from "./dsn_report.ts";
import { domainOf, type RecipientExtra, type Reports } from "./outcome.ts";
import type { RetryRule } from "./retry_rules.ts";

/** Builds the delay entries of a report for `pending` recipients of `env`. */
export async function delayReports(
  env: Envelope,
  pending: Recipient[],
  opts: {
    rulesFor(domain: string): Promise<RetryRule[] | undefined>;
    now: number;
    extraOf(r: Recipient): RecipientExtra;
  },
): Promise<Reports> {
  const reports: Reports = { failure: [], success: [], delay: [] };
  for (const r of pending) {
    if (!shouldSendDsn(env, r, "delay")) continue;
    const rules = await opts.rulesFor(domainOf(r.address)) ?? [];
    const extra = opts.extraOf(r);
    const first = extra.firstFailure ?? env.receivedAt;
    const last = rules.length ? rules[rules.length - 1].until : 0;
    reports.delay.push({
      recipient: r,
      action: "delayed",
      status: "4.4.7",
      remoteMta: extra.remoteMta,
      diagnostic: extra.diagnostic ?? (r.lastError ? `x-ferry; ${r.lastError}` : undefined),
      lastAttempt: new Date(opts.now),
      willRetryUntil: new Date(first + last),
    });
  }
  return reports;
}
