/**
 * Sends DMARC reports (RFC 7489 7.2, 7.3): keeps every evaluated message in the history, and once per
 * `dmarc.reports.interval` (or when asked: SIGUSR2) queues one aggregate report per reporting domain to each
 * of its `rua` destinations that passes External Destination Verification (7.1); failure reports (RFC 6591)
 * go to `ruf` when enabled and the record's `fo` asks for them. Reports are queued in the spool like any
 * message, from `dmarc.reports.email`.
 */

import process from "node:process";
import type { Logger } from "../core/log.ts";
import { errorMessage } from "../core/error_message.ts";
import type { Resolver } from "../dns/resolver.ts";
import type { Spool } from "../spool/spool.ts";
import { queueLocalMessage } from "./local_message.ts";
import type { DmarcHistory, DmarcHistoryEntry, DmarcReportSink } from "../policy/dmarc_history.ts";
import {
  aggregateReportMessage,
  aggregateXml,
  failureReportMessage,
  failureWanted,
  gzipReport,
  parseReportUris,
  type ReportUri,
} from "./dmarc_report.ts";

/** What the reporter needs. */
export interface DmarcReporterOptions {
  history: DmarcHistory;
  spool: Spool;
  resolver: Resolver;
  log: Logger;
  /** Our host name (the report's receiver) */
  hostname: string;
  orgName: string;
  /** report_metadata email, and the From of every report */
  email: string;
  /** Send failure reports for every connection (else only where `dmarcEnableForensic` is set) */
  failureReports: boolean;
  /** Queues a stored message for delivery */
  enqueue(id: string): void;
}

function domainOf(address: string): string {
  return address.slice(address.lastIndexOf("@") + 1).toLowerCase();
}

/** Keeps the history and sends the reports. */
export class DmarcReporter implements DmarcReportSink {
  #o: DmarcReporterOptions;
  #seq = 0;

  constructor(o: DmarcReporterOptions) {
    this.#o = o;
  }

  /** Records one evaluated message; a failure to write is logged, never fails the message. */
  record(entry: DmarcHistoryEntry): void {
    try {
      this.#o.history.record(entry);
    } catch (err) {
      this.#o.log.write(
        `DMARC history: cannot record a result for ${entry.policyDomain}: ${errorMessage(err)}`,
      );
    }
  }

  /**
   * RFC 7489 7.1: a destination outside the policy domain's organisation must publish
   * `<policy-domain>._report._dmarc.<destination-domain>` with v=DMARC1.
   */
  async #verified(policyDomain: string, uri: ReportUri): Promise<boolean> {
    const dest = domainOf(uri.address);
    const d = policyDomain.toLowerCase();
    if (dest === d || dest.endsWith(`.${d}`) || d.endsWith(`.${dest}`)) return true;
    try {
      const answer = await this.#o.resolver.txt(`${d}._report._dmarc.${dest}`, {
        signal: AbortSignal.timeout(10_000),
      });
      return answer.records.some((r) => /^v=DMARC1(\s*;|\s*$)/i.test(r));
    } catch (err) {
      this.#o.log.write(`DMARC report to <${uri.address}>: verification lookup failed: ${errorMessage(err)}`);
      return false;
    }
  }

  #queue(to: string, data: Uint8Array, kind: string): Promise<string> {
    const { spool, log, hostname, email } = this.#o;
    return queueLocalMessage({
      spool,
      log,
      hostname,
      sender: email,
      to,
      data,
      kind,
      enqueue: (id) => this.#o.enqueue(id),
    });
  }

  #reportId(now: number): string {
    return `${Math.floor(now / 1000)}.${process.pid}.${++this.#seq}`;
  }

  /** Queues the aggregate reports of everything recorded before `now`; resolves to the ids queued. */
  async sendPending(now = Date.now()): Promise<string[]> {
    const { history, log, hostname, orgName, email } = this.#o;
    const queued: string[] = [];
    for (const [domain, entries] of history.pending(now)) {
      const tags = entries[entries.length - 1].tags;
      const meta = {
        orgName,
        email,
        reportId: this.#reportId(now),
        begin: Math.floor(entries[0].at / 1000),
        end: Math.floor(now / 1000),
        policyDomain: domain,
        tags,
      };
      const gz = gzipReport(aggregateXml(meta, entries));
      const uris = parseReportUris(tags.rua);
      if (uris.length === 0) {
        log.write(`DMARC aggregate report for ${domain}: the record names no rua: not sent`);
      }
      for (const uri of uris) {
        if (uri.maxBytes !== undefined && gz.length > uri.maxBytes) {
          log.write(
            `DMARC aggregate report for ${domain} to <${uri.address}>: ${gz.length} octets is over its limit`,
          );
          continue;
        }
        if (!(await this.#verified(domain, uri))) {
          log.write(
            `DMARC aggregate report for ${domain} to <${uri.address}>: not sent, the destination did not ` +
              `authorise reports for ${domain} (RFC 7489 7.1)`,
          );
          continue;
        }
        const message = aggregateReportMessage({
          from: email,
          to: uri.address,
          receiver: hostname,
          meta,
          gz,
          date: new Date(now),
          messageId: `${meta.reportId}@${hostname}`,
        });
        try {
          queued.push(await this.#queue(uri.address, message, `DMARC aggregate report for ${domain}`));
        } catch (err) {
          // Kept in the history: the next run tries again.
          log.write(`DMARC aggregate report for ${domain}: cannot queue: ${errorMessage(err)}`);
          return queued;
        }
      }
      history.remove(entries.map((e) => e.id));
    }
    return queued;
  }

  /** Queues a failure report when enabled for this message and the record's fo= asks for it. */
  async failure(
    entry: DmarcHistoryEntry,
    message: Uint8Array,
    opts: { forced?: boolean; authResults?: string } = {},
  ): Promise<void> {
    if (!this.#o.failureReports && !opts.forced) return;
    if (!failureWanted(entry.tags.fo, entry)) return;
    const uris = parseReportUris(entry.tags.ruf);
    // UTF-8, as the report is encoded: a UTF-8 header field (RFC 6532) reaches the report as it was. ("latin1"
    // is windows-1252 to TextDecoder, which turned every non-ASCII character into mojibake.)
    const text = new TextDecoder().decode(message);
    const end = text.search(/\r?\n\r?\n/);
    const headers = end < 0 ? text : text.slice(0, end + 2);
    for (const uri of uris) {
      try {
        if (!(await this.#verified(entry.policyDomain, uri))) {
          this.#o.log.write(`DMARC failure report to <${uri.address}>: not sent, destination not verified`);
          continue;
        }
        const report = failureReportMessage({
          from: this.#o.email,
          to: uri.address,
          receiver: this.#o.hostname,
          entry,
          authResults: opts.authResults ?? `${this.#o.hostname}; dmarc=fail header.from=${entry.headerFrom}`,
          headers,
          date: new Date(),
          messageId: `${this.#reportId(Date.now())}@${this.#o.hostname}`,
        });
        await this.#queue(uri.address, report, `DMARC failure report for ${entry.headerFrom}`);
      } catch (err) {
        this.#o.log.write(`DMARC failure report to <${uri.address}>: ${errorMessage(err)}`);
      }
    }
  }
}
