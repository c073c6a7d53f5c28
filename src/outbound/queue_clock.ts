/**
 * The queue manager's sense of time, injectable so its tests run on a fake clock: `now()` and a one-shot
 * timer. The system clock uses Date.now() and unref'd timers (a pending wake never keeps the process alive).
 */

/** A cancellable one-shot timer. */
export interface ClockTimer {
  cancel(): void;
}

/** Time and timers. */
export interface Clock {
  now(): number;
  /** Calls `fn` once after `ms` (clamped to ≥ 0). */
  timer(ms: number, fn: () => void): ClockTimer;
}

/** The real clock. */
export const systemClock: Clock = {
  now: () => Date.now(),
  timer(ms, fn) {
    // setTimeout holds at most 2^31-1 ms; a later wake simply re-arms when it fires.
    const handle = setTimeout(fn, Math.min(Math.max(0, ms), 2 ** 31 - 1));
    Deno.unrefTimer(handle);
    return { cancel: () => clearTimeout(handle) };
  },
};

/** Jitter for a retry time: up to `fraction` of the interval (at most an hour) later, never earlier. */
export function retryJitter(fraction: number, random: () => number = Math.random) {
  return (at: number, interval: number): number => {
    if (fraction <= 0 || interval <= 0) return at;
    return at + Math.floor(random() * Math.min(interval * fraction, 3_600_000));
  };
}
