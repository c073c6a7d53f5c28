/**
 * Queue operations for operators (Exim's -bp/-M/-Mg/-Mrm/-qff, Postfix's mailq/postqueue -f/postsuper):
 * list, show, hold, release, retry now, flush, bounce (with a failure report), delete (without), summary.
 * One module for every front end: the admin API, and through it the `queue` command line (which runs the
 * same API in-process on a stopped Ferry's spool). Safe beside a delivery in progress: hold takes effect when the attempt
 * ends (the end of an attempt never overrides `hold`), bounce and delete abort the attempt first.
 */

import { reportEnvelope } from "./local_message.ts";
import type { Envelope } from "../core/envelope.ts";
import { oneLine } from "../core/one_line.ts";
import type { Logger } from "../core/log.ts";
import type { QueueQuery, QueueRow, QueueState, QueueSummary, Spool } from "../spool/spool.ts";
import { buildDsn, type DsnRecipient, shouldSendDsn } from "./dsn_report.ts";

/** What the operations need from a running queue manager (absent when Ferry is not running). */
export interface QueueManagerHooks {
  /** Whether a delivery of `id` is in progress */
  isActive(id: string): boolean;
  /** Aborts the delivery of `id` in progress and resolves when its results are saved */
  interrupt(id: string): Promise<void>;
  /** The next run of `id` tries its hosts even in back-off, its destination even when dead (a retry) */
  force(id: string): void;
  /** Looks at the queue now (after a release, retry or flush) */
  wake(): Promise<void>;
  /** Forgets connection failures and back-off (of one domain's destinations, or all): flush means try now */
  forgetFailures(domain?: string): void;
  /** An operator's bounce or delete took the message out of the spool (`msg:complete`) */
  removed(id: string, sender: string): void;
}

/** The result of an operation on one message. */
export interface OpOutcome {
  id: string;
  ok: boolean;
  /** What happened, or why nothing did */
  message: string;
  /** The id of the failure report a bounce queued */
  report?: string;
}

/** Everything `show` returns. */
export interface MessageDetails {
  row: QueueRow;
  envelope: Envelope;
  history: { at: number; text: string }[];
  /** The header section of the message as stored (at most 64 KiB), or why it cannot be read */
  headers?: string;
  headersError?: string;
}

/** Options of {@link QueueOps}. */
export interface QueueOpsOptions {
  spool: Spool;
  /** Our host name, for the reports `bounce` sends */
  hostname: string;
  log?: Logger;
  manager?: QueueManagerHooks;
  now?: () => number;
}

const HEADER_LIMIT = 64 * 1024;

/** Queue operations over one spool. */
export class QueueOps {
  #spool: Spool;
  #hostname: string;
  #log?: Logger;
  #manager?: QueueManagerHooks;
  #now: () => number;

  constructor(options: QueueOpsOptions) {
    this.#spool = options.spool;
    this.#hostname = options.hostname;
    this.#log = options.log;
    this.#manager = options.manager;
    this.#now = options.now ?? Date.now;
  }

  /** One page of queue rows (filters: state, sender, recipient, domain, age). */
  list(query: QueueQuery = {}): Promise<QueueRow[]> {
    return this.#spool.query(query);
  }

  /** Counts by state and by destination domain. */
  summary(): Promise<QueueSummary> {
    return this.#spool.summary();
  }

  /** Envelope, per-recipient state, history and headers of one message; undefined when not queued. */
  async show(id: string): Promise<MessageDetails | undefined> {
    const [row, envelope] = await Promise.all([this.#spool.row(id), this.#spool.get(id)]);
    if (row === undefined || envelope === undefined) return undefined;
    const details: MessageDetails = { row, envelope, history: await this.#spool.history(id) };
    try {
      // Only the head: a 50 MB body is not read (nor its digest checked) to show its header section.
      const head = await this.#spool.readHead(id, HEADER_LIMIT);
      if (head === undefined) details.headersError = "the message is gone";
      else details.headers = headerSection(head);
    } catch (err) {
      details.headersError = (err as Error).message;
    }
    return details;
  }

  /** Parks messages: not delivered until released (one in delivery is held when its attempt ends). */
  hold(ids: string[]): Promise<OpOutcome[]> {
    return this.#each(ids, async (id) => {
      const changed = await this.#spool.setState(id, "hold", {
        from: ["incoming", "deferred", "active"],
        reason: "held by operator",
      });
      if (!changed) return this.#notIn(id, "incoming, deferred or active");
      const active = this.#manager?.isActive(id) ? " (after the attempt in progress)" : "";
      this.#log?.write(`held by operator${active}`, { id, event: "hold" });
      return { id, ok: true, message: `held${active}` };
    });
  }

  /** Returns held messages to the queue (due at their next attempt; use retry to send now). */
  release(ids: string[]): Promise<OpOutcome[]> {
    return this.#after(this.#each(ids, async (id) => {
      const env = await this.#spool.get(id);
      const tried = env?.recipients.some((r) => (r.attempts ?? 0) > 0) ?? false;
      const changed = await this.#spool.setState(id, tried ? "deferred" : "incoming", { from: ["hold"] });
      if (!changed) return this.#notIn(id, "hold");
      this.#log?.write("released by operator", { id, event: "release" });
      return { id, ok: true, message: "released" };
    }));
  }

  /**
   * Makes messages due now, ignoring their back-off (`exim -M`): their own retry times, and for their next
   * attempt also the back-off of their hosts and a dead destination.
   */
  retry(ids: string[]): Promise<OpOutcome[]> {
    return this.#after(this.#each(ids, async (id) => {
      const row = await this.#spool.row(id);
      if (row === undefined) return { id, ok: false, message: "not in the queue" };
      if (row.state === "active") return { id, ok: false, message: "being delivered now" };
      if (row.state !== "incoming" && row.state !== "deferred") {
        return this.#notIn(id, "incoming or deferred");
      }
      this.#manager?.force(id);
      const changed = await this.#spool.setState(id, row.state, {
        from: [row.state],
        nextAttempt: this.#now(),
      });
      if (!changed) return { id, ok: false, message: "changed meanwhile, try again" };
      this.#log?.write("retry now requested by operator", { id, event: "retry" });
      return { id, ok: true, message: "due now" };
    }));
  }

  /** Retry now for the whole queue or one destination domain (`exim -qff`, `postqueue -f`/`-s`). */
  async flush(domain?: string): Promise<{ messages: number }> {
    this.#manager?.forgetFailures(domain);
    const messages = await this.#spool.retryNow(domain, this.#now());
    this.#log?.write(
      `flush${domain ? ` of ${domain}` : ""} requested by operator: ${messages} message(s) due now`,
    );
    await this.#manager?.wake();
    return { messages };
  }

  /**
   * Fails every pending recipient and sends the failure report (`exim -Mg`); the operator's `reason`, when
   * given, follows "bounced by the administrator" in the recipients' last error, the report and the log.
   */
  bounce(ids: string[], options: { reason?: string } = {}): Promise<OpOutcome[]> {
    // One line: the reason lands in log lines and the report's header fields.
    const reason = options.reason === undefined ? undefined : oneLine(options.reason);
    const text = reason ? `bounced by the administrator: ${reason}` : "bounced by the administrator";
    return this.#after(this.#each(ids, async (id) => {
      await this.#park(id, "being bounced by operator");
      const env = await this.#spool.get(id);
      if (env === undefined) return { id, ok: false, message: "not in the queue" };
      const now = this.#now();
      const pending = env.recipients.filter((r) => r.status === "pending");
      if (pending.length === 0) return { id, ok: false, message: "no pending recipient" };
      const entries: DsnRecipient[] = [];
      for (const r of pending) {
        r.status = "failed";
        r.lastError = text;
        if (shouldSendDsn(env, r, "failure")) {
          entries.push({ recipient: r, action: "failed", status: "5.0.0", diagnostic: `x-ferry; ${text}` });
        }
      }
      const reports = [];
      if (entries.length > 0) {
        // The report quotes the message: its data must read back sound (else it is corrupt: no report).
        const data = await this.#spool.readData(id);
        const report = buildDsn({
          kind: "failure",
          reportingMta: this.#hostname,
          envelope: env,
          recipients: entries,
          original: data,
        });
        reports.push({
          envelope: reportEnvelope({
            id: this.#spool.newId(),
            original: env,
            kind: "failure",
            size: report.length,
            receivedAt: now,
            hostname: this.#hostname,
          }),
          data: report,
        });
      }
      // The failed states and the report in one transaction; nothing pending is left, so it completes.
      await this.#spool.apply({
        id,
        recipients: pending.map((r) => ({
          index: env.recipients.indexOf(r),
          status: "failed",
          lastError: text,
        })),
        reports,
        history: pending.map((r) => `** ${r.address}: ${text}`),
        state: "done",
      });
      for (const r of pending) {
        this.#log?.write(`** ${r.address}: ${text}`, { id, event: "**", recipient: r.address });
      }
      for (const { envelope, data } of reports) {
        this.#log?.write(
          `<= <> R=${id} U=ferry P=local S=${data.length} for ${env.sender} (failure report)`,
          { id: envelope.id, event: "<=" },
        );
      }
      const report = reports[0]?.envelope.id;
      const sent = report !== undefined ? `, failure report ${report} to <${env.sender}>` : "";
      this.#log?.write(`bounced by operator${sent}`, { id, event: "bounce" });
      this.#completed(id, env.sender);
      return { id, ok: true, message: `bounced ${pending.length} recipient(s)${sent}`, report };
    }));
  }

  /** Removes messages without any report (`exim -Mrm`, `postsuper -d`). */
  delete(ids: string[]): Promise<OpOutcome[]> {
    return this.#each(ids, async (id) => {
      await this.#park(id, "being deleted by operator");
      const row = await this.#spool.row(id);
      if (row === undefined) return { id, ok: false, message: "not in the queue" };
      await this.#spool.remove(id);
      this.#log?.write("deleted by operator", { id, event: "delete" });
      this.#completed(id, row.sender);
      return { id, ok: true, message: "deleted" };
    });
  }

  /** As Exim after -Mg and -Mrm: the message has left the spool, nothing more happens to it. */
  #completed(id: string, sender: string): void {
    this.#log?.write("Completed", { id, event: "Completed" });
    this.#manager?.removed(id, sender);
  }

  /**
   * Holds a message and ends its delivery in progress: the aborted attempt saves what completed and cannot
   * hand the message back to the queue manager (the end of an attempt never overrides `hold`).
   */
  async #park(id: string, reason: string): Promise<void> {
    await this.#spool.setState(id, "hold", { from: ["incoming", "deferred", "active"], reason });
    await this.#manager?.interrupt(id);
  }

  async #each(ids: string[], fn: (id: string) => Promise<OpOutcome>): Promise<OpOutcome[]> {
    const out: OpOutcome[] = [];
    for (const id of ids) {
      try {
        out.push(await fn(id));
      } catch (err) {
        out.push({ id, ok: false, message: (err as Error).message });
      }
    }
    return out;
  }

  async #after(results: Promise<OpOutcome[]>): Promise<OpOutcome[]> {
    const done = await results;
    if (done.some((r) => r.ok)) await this.#manager?.wake();
    return done;
  }

  async #notIn(id: string, states: string): Promise<OpOutcome> {
    const row = await this.#spool.row(id);
    if (row === undefined) return { id, ok: false, message: "not in the queue" };
    return { id, ok: false, message: `is ${row.state}, not ${states}` };
  }
}

/** The header section of a message (up to the empty line), at most {@link HEADER_LIMIT} octets. */
function headerSection(data: Uint8Array): string {
  const limit = Math.min(data.length, HEADER_LIMIT);
  let end = limit;
  for (let i = 0; i + 3 < limit; i++) {
    if (data[i] === 0x0d && data[i + 1] === 0x0a && data[i + 2] === 0x0d && data[i + 3] === 0x0a) {
      end = i + 2;
      break;
    }
    if (data[i] === 0x0a && data[i + 1] === 0x0a) {
      end = i + 1;
      break;
    }
  }
  return new TextDecoder().decode(data.subarray(0, end));
}

/** Queue states an operator may filter on. */
export function isQueueState(s: string): s is QueueState {
  return ["incoming", "active", "deferred", "hold", "corrupt"].includes(s);
}
