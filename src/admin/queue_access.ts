/**
 * The queue as the admin API and the dashboard see it: summary, a filtered page of messages, one message with
 * its history, and the operator's actions (hold, release, retry, bounce, delete) over the spool's queue states
 * and the delivery side.
 */

import type { Envelope } from "../core/envelope.ts";
import type { QueueRow, QueueState, Spool } from "../spool/spool.ts";
import { QUEUE_STATES } from "../spool/spool.ts";

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

/** What the actions need from the delivery side (the Scheduler), when delivery runs. */
export interface QueueDelivery {
  /** Look at the queue now (after a release or retry) */
  wake(): Promise<void>;
  /** Ends a delivery of `id` in flight, if any (its results saved) */
  interrupt(id: string): Promise<void>;
  /** Fail every pending recipient with a report and remove the message */
  bounce(id: string, reason: string): Promise<boolean>;
}

async function itemOf(spool: Spool, row: QueueRow): Promise<QueueItem> {
  const env = await spool.get(row.id);
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

const notFound = (id: string): ActionResult => ({
  ok: false,
  error: "not-found",
  detail: `no message ${id}`,
});
const conflict = (detail: string): ActionResult => ({ ok: false, error: "conflict", detail });

/** Queue access over the spool's queue states; `delivery` wakes the scheduler and bounces. */
export function spoolQueueAccess(spool: Spool, delivery: () => QueueDelivery | undefined): QueueAccess {
  return {
    actions: true,
    async summary() {
      return (await spool.summary()).byState;
    },
    async list(f) {
      const rows = await spool.query({
        state: QUEUE_STATES.includes(f.state as QueueState) ? f.state as QueueState : undefined,
        sender: f.sender,
        recipient: f.recipient,
        domain: f.domain,
        after: f.after,
        limit: f.limit,
      });
      if (f.state && !QUEUE_STATES.includes(f.state as QueueState)) return [];
      return await Promise.all(rows.map((r) => itemOf(spool, r)));
    },
    async show(id) {
      const row = await spool.row(id);
      const envelope = row && await spool.get(id);
      if (!row || !envelope) return undefined;
      return { item: await itemOf(spool, row), envelope, history: await spool.history(id) };
    },
    async act(id, action, options = {}) {
      const row = await spool.row(id);
      if (!row) return notFound(id);
      const d = delivery();
      switch (action) {
        case "hold": {
          if (row.state === "hold") return conflict(`${id} is already on hold`);
          if (row.state === "corrupt") return conflict(`${id} is corrupt`);
          // A delivery in flight ends first (what it completed is saved), then the message is parked.
          await d?.interrupt(id);
          const ok = await spool.setState(id, "hold", {
            from: ["incoming", "deferred", "active"],
            reason: options.reason ?? "held by the operator",
          });
          return ok ? { ok: true, state: "hold" } : conflict(`${id} changed state meanwhile`);
        }
        case "release": {
          if (row.state !== "hold") return conflict(`${id} is not on hold (${row.state})`);
          const ok = await spool.setState(id, "deferred", { from: ["hold"], nextAttempt: Date.now() });
          if (!ok) return conflict(`${id} changed state meanwhile`);
          await d?.wake();
          return { ok: true, state: "deferred" };
        }
        case "retry": {
          if (row.state !== "deferred" && row.state !== "incoming") {
            return conflict(`${id} cannot be retried in state ${row.state}`);
          }
          const ok = await spool.setState(id, row.state, { from: [row.state], nextAttempt: Date.now() });
          if (!ok) return conflict(`${id} changed state meanwhile`);
          await d?.wake();
          return { ok: true, state: row.state };
        }
        case "bounce": {
          if (!d) return conflict("delivery is off (delivery.enable): nothing can send the reports");
          return (await d.bounce(id, options.reason ?? "no reason given"))
            ? { ok: true, state: "bounced" }
            : notFound(id);
        }
        case "delete": {
          await d?.interrupt(id);
          await spool.remove(id);
          return { ok: true, state: "deleted" };
        }
      }
    },
  };
}
