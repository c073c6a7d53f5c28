/**
 * Per-destination limits of the queue manager, after Postfix's qmgr: at most `concurrency` deliveries to
 * one destination at a time (the others wait their turn, in order), and dead-destination throttling: after
 * `deadAfter` connection failures in a row, a destination is "dead" for a back-off that doubles (from
 * `baseMs` up to `maxMs`), and its other queued mail is deferred without each message trying. The first
 * delivery after the back-off is the probe: its success revives the destination.
 * In memory: a restart forgets it, which costs one probe per destination, not mail.
 */

import type { Clock } from "./queue_clock.ts";

/** Options of {@link Destinations}. */
export interface DestinationOptions {
  /** Deliveries at once to one destination */
  concurrency: number;
  /** Connection failures in a row that make a destination dead (0: never) */
  deadAfter: number;
  baseMs: number;
  maxMs: number;
  clock: Clock;
}

interface State {
  active: number;
  waiters: (() => void)[];
  failures: number;
  deadUntil: number;
  lastError?: string;
}

/** Concurrency and liveness per destination key. */
export class Destinations {
  #opts: DestinationOptions;
  #state = new Map<string, State>();

  constructor(opts: DestinationOptions) {
    this.#opts = opts;
  }

  #get(key: string): State {
    let s = this.#state.get(key);
    if (s === undefined) {
      s = { active: 0, waiters: [], failures: 0, deadUntil: 0 };
      this.#state.set(key, s);
    }
    return s;
  }

  #forget(key: string, s: State): void {
    if (s.active === 0 && s.waiters.length === 0 && s.failures === 0) this.#state.delete(key);
  }

  /** Deliveries in progress to `key`. */
  active(key: string): number {
    return this.#state.get(key)?.active ?? 0;
  }

  /** Waits for a free slot for `key` (or until `signal` aborts); returns the release function. */
  async acquire(key: string, signal?: AbortSignal): Promise<() => void> {
    const s = this.#get(key);
    while (s.active >= this.#opts.concurrency) {
      if (signal?.aborted) throw signal.reason;
      await new Promise<void>((resolve) => {
        const wake = () => {
          signal?.removeEventListener("abort", wake);
          resolve();
        };
        s.waiters.push(wake);
        signal?.addEventListener("abort", wake, { once: true });
      });
    }
    if (signal?.aborted) throw signal.reason;
    s.active++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      s.active--;
      s.waiters.shift()?.();
      this.#forget(key, s);
    };
  }

  /** Whether any destination is dead now. */
  anyDead(): boolean {
    const now = this.#opts.clock.now();
    for (const s of this.#state.values()) if (s.deadUntil > now) return true;
    return false;
  }

  /** When `key` is dead: why and until when; undefined when it may be tried. */
  dead(key: string): { until: number; failures: number; lastError?: string } | undefined {
    const s = this.#state.get(key);
    if (s === undefined || s.deadUntil <= this.#opts.clock.now()) return undefined;
    return { until: s.deadUntil, failures: s.failures, lastError: s.lastError };
  }

  /** Records a connection failure (no host answered). */
  failed(key: string, error: string): void {
    const s = this.#get(key);
    s.failures++;
    s.lastError = error;
    const { deadAfter, baseMs, maxMs, clock } = this.#opts;
    if (deadAfter > 0 && s.failures >= deadAfter) {
      s.deadUntil = clock.now() + Math.min(maxMs, baseMs * 2 ** (s.failures - deadAfter));
    }
  }

  /** Forgets every destination's failures (a flush: try everything now). */
  forgetFailures(): void {
    for (const [key, s] of this.#state) {
      s.failures = 0;
      s.deadUntil = 0;
      s.lastError = undefined;
      this.#forget(key, s);
    }
  }

  /** Records that a host of `key` answered: the destination is alive. */
  succeeded(key: string): void {
    const s = this.#state.get(key);
    if (s === undefined) return;
    s.failures = 0;
    s.deadUntil = 0;
    s.lastError = undefined;
    this.#forget(key, s);
  }
}
