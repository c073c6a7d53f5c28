/**
 * Outbound connection reuse: open sessions are kept per destination (route, address, port) for a short idle
 * time so the next message to the same place skips connect, greeting, EHLO and TLS; at most `perHost`
 * connections per destination (the overall number is bounded by `delivery.concurrency`).
 */

import type { OpenSession } from "./transport.ts";

/** Pool limits. */
export interface PoolOptions {
  perHost: number;
  idleTimeoutMs: number;
}

interface Slot {
  open: number;
  idle: { session: OpenSession; timer?: ReturnType<typeof setTimeout> }[];
  waiters: (() => void)[];
}

/** Keeps idle sessions and limits concurrent ones per key. */
export class ConnectionPool {
  #opts: PoolOptions;
  #slots = new Map<string, Slot>();
  #closing = false;

  constructor(opts: PoolOptions) {
    this.#opts = opts;
  }

  #slot(key: string): Slot {
    let s = this.#slots.get(key);
    if (!s) this.#slots.set(key, s = { open: 0, idle: [], waiters: [] });
    return s;
  }

  /** Lets one waiter in; a destination with nothing open or waiting is forgotten. */
  #wake(key: string, slot: Slot): void {
    const next = slot.waiters.shift();
    if (next) next();
    else if (slot.open === 0 && slot.idle.length === 0) this.#slots.delete(key);
  }

  /**
   * An idle session for `key` that `fits` (a delivery may reuse only a session that meets its security
   * requirement), or a new one from `open` when under the limit; waits otherwise. An idle session that does
   * not fit is closed to make room.
   */
  async acquire(
    key: string,
    open: () => Promise<OpenSession>,
    fits: (session: OpenSession) => boolean = () => true,
  ): Promise<OpenSession> {
    const slot = this.#slot(key);
    for (;;) {
      while (slot.idle.length) {
        const { session, timer } = slot.idle.pop()!;
        clearTimeout(timer);
        if (!session.client.closed && fits(session)) return session;
        slot.open--;
        if (!session.client.closed) void session.close();
      }
      if (slot.open < this.#opts.perHost) {
        slot.open++;
        try {
          return await open();
        } catch (err) {
          slot.open--;
          this.#wake(key, slot);
          throw err;
        }
      }
      await new Promise<void>((resolve) => slot.waiters.push(resolve));
    }
  }

  /** Gives a session back: kept idle when reusable, closed otherwise. */
  release(key: string, session: OpenSession, reusable: boolean): void {
    const slot = this.#slot(key);
    if (!reusable || this.#closing || session.client.closed) {
      slot.open--;
      void session.close();
      this.#wake(key, slot);
      return;
    }
    if (slot.waiters.length) {
      // Someone is waiting for this destination: hand it over through the idle list.
      slot.idle.push({ session });
      this.#wake(key, slot);
      return;
    }
    const entry: Slot["idle"][number] = { session };
    entry.timer = setTimeout(() => {
      const i = slot.idle.indexOf(entry);
      if (i >= 0) {
        slot.idle.splice(i, 1);
        slot.open--;
        void session.close();
        this.#wake(key, slot);
      }
    }, this.#opts.idleTimeoutMs);
    entry.timer.unref?.();
    slot.idle.push(entry);
  }

  /** Closes every idle session; sessions in use are closed when released. */
  async close(): Promise<void> {
    this.#closing = true;
    const all: Promise<void>[] = [];
    for (const slot of this.#slots.values()) {
      for (const { session, timer } of slot.idle.splice(0)) {
        clearTimeout(timer);
        slot.open--;
        all.push(session.close());
      }
    }
    await Promise.allSettled(all);
  }
}
