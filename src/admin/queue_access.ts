/**
 * The queue as the admin API and the dashboard see it: summary, a filtered page of messages, one message with
 * its history, and the operator's actions (hold, release, retry, bounce, delete) through the queue operations.
 */

import type { Envelope } from "../core/envelope.ts";
import type { QueueQuery, QueueRow, QueueState, QueueSummary, Spool } from "../spool/spool.ts";
import { isQueueState, type OpOutcome, type QueueOps } from "../outbound/queue_ops.ts";

/** The operator's actions on one message. */
export const QUEUE_ACTIONS = ["hold", "release", "retry", "bounce", "delete"] as const;
/** One of {@link QUEUE_ACTIONS}. */
export type QueueAction = typeof QUEUE_ACTIONS[number];

/** Whether `name` is one of the operator's actions. */
export function isQueueAction(name: string): name is QueueAction {
  return (QUEUE_ACTIONS as readonly string[]).includes(name);
}

/** A message as listings show it. */
export interface QueueItem {
  id: string;
  state: string;
  sender: string;
  recipients: string[];
  pending: number;
  size: number;
  receivedAt: number;
  nextAttempt?: number;
  /** Why it is held or corrupt, when recorded */
  reason?: string;
}

/** Filters and paging of a listing: the spool's query, with the state as given (an unknown one lists nothing). */
export type QueueFilter = Omit<QueueQuery, "state" | "limit"> & { state?: string; limit: number };

/** What an operator may add to an action. */
export interface ActionOptions {
  /** Why: logged by the caller; a bounce also gives it in the recipients' last error and the failure report */
  reason?: string;
}

/** The outcome of an action. */
export type ActionResult =
  | { ok: true; state?: string; message: string; /** The failure report a bounce queued */ report?: string }
  | { ok: false; error: "not-found" | "conflict"; detail: string };

/** What the admin room needs from the queue. */
export interface QueueAccess {
  /** Whether actions are offered */
  readonly actions: boolean;
  /** Counts by state, and pending messages and recipients by destination domain */
  summary(): Promise<QueueSummary>;
  list(filter: QueueFilter): Promise<QueueItem[]>;
  /** One message; with `headers`, also its header section as stored (reads the message data) */
  show(id: string, options?: { headers?: boolean }): Promise<MessageView | undefined>;
  /** One action on one message; a bounce's `reason` goes into the failure report */
  act(id: string, action: QueueAction, options?: ActionOptions): Promise<ActionResult>;
  /** One action on several messages, an outcome each; undefined while Ferry is still starting */
  actMany(action: QueueAction, ids: string[], options?: ActionOptions): Promise<OpOutcome[] | undefined>;
  /** Everything (or one recipient domain) due now; undefined while Ferry is still starting */
  flush(domain?: string): Promise<{ messages: number } | undefined>;
}

/** One message as `show` returns it. */
export interface MessageView {
  item: QueueItem;
  envelope: Envelope;
  history: { at: number; text: string }[];
  /** The header section (at most 64 KiB), when asked for and readable */
  headers?: string;
  /** Why the header section could not be read */
  headersError?: string;
}

function itemOf(row: QueueRow, env?: Envelope): QueueItem {
  return {
    id: row.id,
    state: row.state,
    sender: row.sender,
    recipients: env?.recipients.map((r) => r.address) ?? [],
    pending: row.pending,
    size: row.size,
    receivedAt: row.receivedAt,
    nextAttempt: row.nextAttempt,
    reason: row.reason,
  };
}

/** One action through the queue operations; only a bounce takes the reason. */
function perform(
  q: QueueOps,
  action: QueueAction,
  ids: string[],
  options: ActionOptions,
): Promise<OpOutcome[]> {
  return action === "bounce" ? q.bounce(ids, options) : q[action](ids);
}

/**
 * Queue access through the queue operations (`QueueOps`, shared with `deno task queue`); `ops()` is undefined
 * only while Ferry is still starting. A `reason` is logged by the caller; only a bounce passes it on (into the
 * failure report): the other operations record their own wording.
 */
export function opsQueueAccess(spool: Spool, ops: () => QueueOps | undefined): QueueAccess {
  return {
    actions: true,
    summary() {
      return spool.summary();
    },
    async list(f) {
      if (f.state && !isQueueState(f.state)) return [];
      const rows = await spool.query({ ...f, state: f.state as QueueState | undefined });
      return await Promise.all(rows.map(async (r) => itemOf(r, await spool.get(r.id))));
    },
    async show(id, options = {}) {
      const q = options.headers ? ops() : undefined;
      if (q) {
        const d = await q.show(id);
        if (!d) return undefined;
        return {
          item: itemOf(d.row, d.envelope),
          envelope: d.envelope,
          history: d.history,
          headers: d.headers,
          headersError: d.headersError,
        };
      }
      const [row, envelope] = await Promise.all([spool.row(id), spool.get(id)]);
      if (!row || !envelope) return undefined;
      return { item: itemOf(row, envelope), envelope, history: await spool.history(id) };
    },
    async act(id, action, options = {}) {
      const q = ops();
      if (!q) return { ok: false, error: "conflict", detail: "Ferry is still starting" };
      if (!(await spool.row(id))) return { ok: false, error: "not-found", detail: `no message ${id}` };
      const [r] = await perform(q, action, [id], options);
      if (!r.ok) {
        return /not in the queue/.test(r.message)
          ? { ok: false, error: "not-found", detail: `no message ${id}` }
          : { ok: false, error: "conflict", detail: `${id} ${r.message}` };
      }
      const gone = action === "delete" ? "deleted" : action === "bounce" ? "bounced" : "done";
      return { ok: true, state: (await spool.row(id))?.state ?? gone, message: r.message, report: r.report };
    },
    async actMany(action, ids, options = {}) {
      const q = ops();
      return q && await perform(q, action, ids, options);
    },
    async flush(domain) {
      return await ops()?.flush(domain);
    },
  };
}
