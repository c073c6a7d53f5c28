/**
 * Per-host retry state: a host that failed is skipped for a back-off that doubles with each failure
 * (from `base` up to `max`), so one dead MX does not slow every message. Kept in memory: after a restart
 * every host is tried again, which costs one attempt, not mail.
 */

/** Back-off settings. */
export interface HostRetryOptions {
  baseMs: number;
  maxMs: number;
  now?: () => number;
}

/** Tracks which hosts are in back-off. */
export class HostRetry {
  #opts: HostRetryOptions;
  #state = new Map<string, { failures: number; until: number }>();

  constructor(opts: HostRetryOptions) {
    this.#opts = opts;
  }

  #now(): number {
    return this.#opts.now?.() ?? Date.now();
  }

  /** True while `host` should be skipped. */
  inBackoff(host: string): boolean {
    const s = this.#state.get(host);
    return s !== undefined && s.until > this.#now();
  }

  /** Records a failure and starts (or lengthens) the back-off. */
  failed(host: string): void {
    const s = this.#state.get(host) ?? { failures: 0, until: 0 };
    s.failures++;
    s.until = this.#now() + Math.min(this.#opts.maxMs, this.#opts.baseMs * 2 ** (s.failures - 1));
    this.#state.set(host, s);
  }

  /** Forgets every host's failures (a flush: try everything now). */
  clear(): void {
    this.#state.clear();
  }

  /** Forgets a host's failures. */
  succeeded(host: string): void {
    this.#state.delete(host);
  }
}
