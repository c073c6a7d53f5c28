/**
 * Deadlines on one coarse clock, for the many that are set and then cancelled: every read, reply write and
 * policy stage of every session has one, and almost none ever passes. A JavaScript timer each cost about 7 %
 * of the main thread under the accept benchmark (Deno's timers build a Node-style Timeout object and make an
 * op call to arm and to clear); here setting one is a Set insertion into its slot of {@link RESOLUTION_MS},
 * and cancelling it a deletion. One timer is armed for the earliest slot that has deadlines (a min-heap of
 * slot numbers; a slot emptied by cancels is dropped when it comes up), so idle sessions wake nothing until
 * their deadline, and no timer runs while none is set.
 *
 * A callback runs no earlier than `ms` after it was set, and usually within {@link RESOLUTION_MS} to twice
 * that after, plus whatever delays the event loop. A `ms` that is not a finite number ≥ 0 counts as 0.
 */

/** Granularity of the clock, in milliseconds. */
export const RESOLUTION_MS = 25;

type Entry = { fn: () => void };

const slots = new Map<number, Set<Entry>>();
/** Slot numbers that had deadlines when added (some may since have been emptied), smallest first. */
const heap: number[] = [];
let live = 0;
let timer: ReturnType<typeof setTimeout> | undefined;
/** The slot the timer is armed for. */
let armedFor = Infinity;

/** Runs `fn` once `ms` milliseconds have passed, unless the returned function is called first. */
export function after(ms: number, fn: () => void): () => void {
  const wait = Number.isFinite(ms) && ms > 0 ? ms : 0;
  const slot = Math.ceil((performance.now() + wait) / RESOLUTION_MS);
  let set = slots.get(slot);
  if (set === undefined) {
    set = new Set();
    slots.set(slot, set);
    push(slot);
    if (slot < armedFor) arm(slot);
  }
  const entry: Entry = { fn };
  set.add(entry);
  live++;
  const own = set;
  return () => {
    if (!own.delete(entry)) return;
    if (own.size === 0 && slots.get(slot) === own) slots.delete(slot);
    if (--live === 0) disarm();
  };
}

/**
 * `work`'s outcome, unless `ms` pass first: then `expired()` is called (to abort what the work holds) and its
 * error is the rejection. The deadline is cancelled however the race ends.
 */
export async function withinDeadline<T>(work: Promise<T>, ms: number, expired: () => Error): Promise<T> {
  let cancel: (() => void) | undefined;
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, reject) => {
        cancel = after(ms, () => reject(expired()));
      }),
    ]);
  } finally {
    cancel?.();
  }
}

/** Deadlines set and not yet run or cancelled (tests). */
export function pendingDeadlines(): number {
  return live;
}

function arm(slot: number): void {
  if (timer !== undefined) clearTimeout(timer);
  armedFor = slot;
  timer = setTimeout(fire, Math.max(0, slot * RESOLUTION_MS - performance.now()));
}

function disarm(): void {
  if (timer !== undefined) clearTimeout(timer);
  timer = undefined;
  armedFor = Infinity;
  heap.length = 0;
  slots.clear();
}

function fire(): void {
  timer = undefined;
  armedFor = Infinity;
  const now = Math.floor(performance.now() / RESOLUTION_MS);
  while (heap.length > 0 && heap[0] <= now) {
    const slot = pop();
    const set = slots.get(slot);
    if (set === undefined) continue;
    slots.delete(slot);
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
  // The next slot that still has deadlines (emptied ones are dropped on the way).
  while (heap.length > 0 && !slots.has(heap[0])) pop();
  // Re-armed for the earliest slot whatever a callback armed meanwhile (a deadline it set may come later).
  if (live === 0) disarm();
  else if (heap.length > 0 && heap[0] !== armedFor) arm(heap[0]);
}

function push(slot: number): void {
  heap.push(slot);
  let i = heap.length - 1;
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (heap[parent] <= heap[i]) break;
    [heap[parent], heap[i]] = [heap[i], heap[parent]];
    i = parent;
  }
}

function pop(): number {
  const top = heap[0];
  const last = heap.pop()!;
  if (heap.length > 0) {
    heap[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < heap.length && heap[l] < heap[m]) m = l;
      if (r < heap.length && heap[r] < heap[m]) m = r;
      if (m === i) break;
      [heap[m], heap[i]] = [heap[i], heap[m]];
      i = m;
    }
  }
  return top;
}
