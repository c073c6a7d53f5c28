/**
 * Deadlines on one coarse clock, for the many that are set and then cancelled: every read, reply write and
 * policy stage of every session has one, and almost none ever passes. A JavaScript timer each cost about 7 %
 * of the main thread under the accept benchmark (Deno's timers build a Node-style Timeout object and make an
 * op call to arm and to clear); here setting one is a Set insertion and cancelling it a deletion, and one
 * interval timer, running only while some deadline is set, runs the callbacks whose time has come.
 *
 * A callback runs no earlier than `ms` after it was set, and at most about {@link RESOLUTION_MS} later.
 */

/** Granularity of the clock, in milliseconds. */
export const RESOLUTION_MS = 25;

type Entry = { fn: () => void };

const slots = new Map<number, Set<Entry>>();
let live = 0;
let ticker: ReturnType<typeof setInterval> | undefined;
/** Every slot up to and including this one has run. */
let done = 0;

const slotNow = () => Math.floor(performance.now() / RESOLUTION_MS);

/** Runs `fn` once `ms` milliseconds have passed, unless the returned function is called first. */
export function after(ms: number, fn: () => void): () => void {
  if (ticker === undefined) {
    done = slotNow();
    ticker = setInterval(tick, RESOLUTION_MS);
  }
  const slot = Math.max(done + 1, Math.ceil((performance.now() + Math.max(0, ms)) / RESOLUTION_MS));
  let set = slots.get(slot);
  if (set === undefined) {
    set = new Set();
    slots.set(slot, set);
  }
  const entry: Entry = { fn };
  set.add(entry);
  live++;
  const own = set;
  return () => {
    if (!own.delete(entry)) return;
    if (own.size === 0 && slots.get(slot) === own) slots.delete(slot);
    if (--live === 0) stop();
  };
}

/** Deadlines set and not yet run or cancelled (tests). */
export function pendingDeadlines(): number {
  return live;
}

function stop(): void {
  if (ticker !== undefined) clearInterval(ticker);
  ticker = undefined;
}

function tick(): void {
  const now = slotNow();
  while (done < now) {
    done++;
    const set = slots.get(done);
    if (set === undefined) continue;
    slots.delete(done);
    for (const entry of set) {
      // Taken out first: a cancel after it ran (or from inside a callback, for another) is then a no-op.
      set.delete(entry);
      live--;
      try {
        entry.fn();
      } catch (err) {
        // As from a timer callback: the program's uncaught-error handling decides.
        reportError(err);
      }
    }
  }
  if (live === 0) stop();
}
