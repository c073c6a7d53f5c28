/**
 * Sends TLS-RPT reports (RFC 8460 §5): once per UTC day, for every policy domain with results from a finished
 * day, looks up `_smtp._tls.<domain>` and hands the gzip'd report to each `rua` destination — `mailto:` as a
 * report message queued in the spool like any message (delivered with `TLS-Required: No`), `https:` as a POST
 * (tls_rpt_https.ts). Each hand-off is written down before the next one, and a day's results are forgotten
 * only when all of its destinations have the report, so a restart neither loses nor repeats a report. A
 * hand-off that failed is tried again an hour later, for up to three days after the day ended.
 */

import type { Logger } from "../core/log.ts";
import { errorMessage } from "../core/error_message.ts";
import type { Resolver } from "../dns/resolver.ts";
import type { Spool } from "../spool/spool.ts";
import type { TlsClientContext } from "../tls/client.ts";
import { dayOf, gzipReport, type TlsRptStore } from "./security/tls_rpt.ts";
import {
  dayStart,
  parseTlsRptRecord,
  reportMessage,
  TLS_RPT_KIND_PREFIX,
  type TlsRptUri,
} from "./tls_rpt_report.ts";
import { postReport } from "./tls_rpt_https.ts";
import { queueLocalMessage } from "./local_message.ts";
import { type Clock, type ClockTimer, systemClock } from "./queue_clock.ts";

/** What the reporter needs. */
export interface TlsRptReporterOptions {
  store: TlsRptStore;
  spool: Spool;
  resolver: Resolver;
  log: Logger;
  hostname: string;
  organizationName: string;
  contactInfo: string;
  /** The From of mailed reports; its domain is the TLS-Report-Submitter */
  email: string;
  /** Trust for `https:` destinations (made on first use) */
  tlsContext: () => TlsClientContext;
  /** Deadline of one HTTPS POST, ms */
  httpsTimeoutMs: number;
  /** Queues a stored message for delivery */
  enqueue(id: string): void;
  /** Time and timers (tests use a fake clock) */
  clock?: Clock;
}

/** What one run did. */
export interface TlsRptRun {
  /** Reports handed off (queued or POSTed) */
  sent: number;
  /** Hand-offs that failed and will be tried again */
  failed: number;
}

const HOUR = 3_600_000;
const DAY = 86_400_000;
/** Results of a day whose reports could not all be handed off are dropped this long after the day ended. */
const GIVE_UP_AFTER = 3 * DAY;

/** Sends the reports of finished days, on a timer at each UTC day boundary or when asked. */
export class TlsRptReporter {
  #o: TlsRptReporterOptions;
  #clock: Clock;
  #timer?: ClockTimer;
  #running?: Promise<TlsRptRun>;
  #stopped = false;

  constructor(o: TlsRptReporterOptions) {
    this.#o = o;
    this.#clock = o.clock ?? systemClock;
  }

  /** The reporting domain (TLS-Report-Submitter, the file name's sender). */
  get submitter(): string {
    const e = this.#o.email;
    return e.slice(e.lastIndexOf("@") + 1).toLowerCase();
  }

  /** Arms the timer for the next UTC day boundary. */
  start(): void {
    this.#arm(this.#clock.now(), false);
  }

  /** Stops the timer (a run in progress finishes). */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#timer?.cancel();
    await this.#running?.catch(() => {});
  }

  #arm(now: number, retrySoon: boolean): void {
    if (this.#stopped) return;
    this.#timer?.cancel();
    const midnight = (Math.floor(now / DAY) + 1) * DAY;
    // A minute past the boundary: sessions that ended at 23:59:59 are recorded by then.
    const at = retrySoon ? Math.min(now + HOUR, midnight + 60_000) : midnight + 60_000;
    this.#timer = this.#clock.timer(at - now, () => {
      this.sendPending(this.#clock.now()).catch((err) =>
        this.#o.log.write(`TLS-RPT: reports failed: ${errorMessage(err)}`)
      );
    });
  }

  /** Hands off the reports of every day before `now`'s UTC day; one run at a time. */
  sendPending(now: number = this.#clock.now()): Promise<TlsRptRun> {
    const run = (this.#running ?? Promise.resolve()).catch(() => {}).then(() => this.#run(now));
    this.#running = run;
    return run.finally(() => {
      if (this.#running === run) this.#running = undefined;
    });
  }

  async #run(now: number): Promise<TlsRptRun> {
    const { store, log } = this.#o;
    const today = dayOf(now);
    const result: TlsRptRun = { sent: 0, failed: 0 };
    for (const day of store.days()) {
      if (day >= today) continue;
      for (const domain of store.domains(day)) {
        const r = await this.#domain(day, domain, now);
        result.sent += r.sent;
        result.failed += r.failed;
        if (r.failed > 0 && now - (dayStart(day) * 1000 + DAY) > GIVE_UP_AFTER) {
          log.write(`TLS-RPT report for ${domain} on ${day}: not handed off for three days, dropped`);
          await store.finish(day, domain);
        }
      }
    }
    this.#arm(this.#clock.now(), result.failed > 0);
    return result;
  }

  /** The report for `domain` on `day` to every destination it has not reached yet. */
  async #domain(day: string, domain: string, now: number): Promise<TlsRptRun> {
    const { store, resolver, log } = this.#o;
    const out: TlsRptRun = { sent: 0, failed: 0 };
    let uris: TlsRptUri[] | undefined;
    try {
      const answer = await resolver.txt(`_smtp._tls.${domain}`, { signal: AbortSignal.timeout(10_000) });
      uris = parseTlsRptRecord(answer.records);
    } catch (err) {
      log.write(`TLS-RPT report for ${domain} on ${day}: _smtp._tls lookup failed: ${errorMessage(err)}`);
      out.failed++;
      return out;
    }
    if (!uris || uris.length === 0) {
      // The domain takes no reports: its results are simply forgotten.
      await store.finish(day, domain);
      return out;
    }
    const reportId = `${day}.${domain}@${this.submitter}`;
    const report = store.report(domain, day, {
      organizationName: this.#o.organizationName,
      contactInfo: this.#o.contactInfo,
      reportId,
    });
    const gz = await gzipReport(report);
    const done = new Set(store.sentTo(day, domain));
    for (const uri of uris) {
      if (done.has(uri.uri)) continue;
      try {
        if (uri.kind === "mailto") {
          const id = await this.#queue(uri.address, domain, day, reportId, gz, now);
          log.write(`TLS-RPT report for ${domain} on ${day} queued for <${uri.address}> as ${id}`);
        } else {
          const status = await postReport(uri.url, gz, {
            resolver,
            tlsContext: this.#o.tlsContext(),
            timeoutMs: this.#o.httpsTimeoutMs,
          });
          log.write(`TLS-RPT report for ${domain} on ${day} posted to ${uri.uri}: ${status}`);
        }
      } catch (err) {
        log.write(`TLS-RPT report for ${domain} on ${day} to ${uri.uri}: ${errorMessage(err)}`);
        out.failed++;
        continue;
      }
      out.sent++;
      done.add(uri.uri);
      await store.markSent(day, domain, uri.uri);
    }
    if (out.failed === 0) await store.finish(day, domain);
    return out;
  }

  async #queue(
    to: string,
    domain: string,
    day: string,
    reportId: string,
    gz: Uint8Array,
    now: number,
  ): Promise<string> {
    const { spool, hostname, email } = this.#o;
    const data = reportMessage({
      from: email,
      to,
      domain,
      submitter: this.submitter,
      organizationName: this.#o.organizationName,
      reportId,
      day,
      gz,
      date: new Date(now),
      messageId: `${reportId.replace("@", ".")}.${crypto.randomUUID().slice(0, 8)}@${hostname}`,
    });
    return await queueLocalMessage({
      spool,
      log: this.#o.log,
      hostname,
      sender: email,
      to,
      data,
      kind: `${TLS_RPT_KIND_PREFIX} for ${domain}`,
      enqueue: (id) => this.#o.enqueue(id),
    });
  }
}
