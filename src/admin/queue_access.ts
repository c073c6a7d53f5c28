/**
 * The queue as the admin API and the dashboard see it: summary, a filtered page of messages, one message with
 * its history, and the operator's actions (hold, release, retry, bounce, delete) through the queue operations.
 */

import type { Envelope } from "../core/envelope.ts";
import type { QueueRow, QueueState, Spool } from "../spool/spool.ts";
import { isQueueState, type QueueOps } from "../outbound/queue_ops.ts";

/** The operator's actions on one message. */
export const QUEUE_ACTIONS = ["hold", "release", "retry", "bounce", "delete"] as const;
/** One of {@link QUEUE_ACTIONS}. */
export type QueueAction = typeof QUEUE_ACTIONS[number];

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

/** Filters and paging of a listing. */
export interface QueueFilter {
  state?: string;
  sender?: string;
  recipient?: string;
  domain?: string;
  /** Rows after this id */
  after?: string;
  limit: number;
}

/** The outcome of an action. */
export type ActionResult =
  | { ok: true; state?: string }
  | { ok: false; error: "not-found" | "conflict"; detail: string };

/** What the admin room needs from the queue. */
export interface QueueAccess {
  /** Whether actions are offered */
  readonly actions: boolean;
  summary(): Promise<Record<string, number>>;
  list(filter: QueueFilter): Promise<QueueItem[]>;
  show(
    id: string,
  ): Promise<{ item: QueueItem; envelope: Envelope; history: { at: number; text: string }[] } | undefined>;
  act(id: string, action: QueueAction, options?: { reason?: string }): Promise<ActionResult>;
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

/**
 * Queue access through the queue operations (`QueueOps`, shared with `deno task queue`); `ops()` is undefined
 * only while Ferry is still starting. A `reason` is logged by the caller: the operations record their own.
 */
export function opsQueueAccess(spool: Spool, ops: () => QueueOps | undefined): QueueAccess {
  return {
    actions: true,
    async summary() {
      return (await spool.summary()).byState;
    },
    async list(f) {
      if (f.state && !isQueueState(f.state)) return [];
      const rows = await spool.query({
        state: f.state as QueueState | undefined,
        sender: f.sender,
        recipient: f.recipient,
        domain: f.domain,
        after: f.after,
        limit: f.limit,
      });
      return await Promise.all(rows.map(async (r) => itemOf(r, await spool.get(r.id))));
    },
    async show(id) {
      const [row, envelope] = await Promise.all([spool.row(id), spool.get(id)]);
      if (!row || !envelope) return undefined;
      return { item: itemOf(row, envelope), envelope, history: await spool.history(id) };
    },
    async act(id, action) {
      const q = ops();
      if (!q) return { ok: false, error: "conflict", detail: "Ferry is still starting" };
      if (!(await spool.row(id))) return { ok: false, error: "not-found", detail: `no message ${id}` };
      const [r] = await q[action]([id]);
      if (!r.ok) {
        return /not in the queue/.test(r.message)
          ? { ok: false, error: "not-found", detail: `no message ${id}` }
          : { ok: false, error: "conflict", detail: `${id} ${r.message}` };
      }
      const gone = action === "delete" ? "deleted" : action === "bounce" ? "bounced" : "done";
      return { ok: true, state: (await spool.row(id))?.state ?? gone };
    },
  };
}
