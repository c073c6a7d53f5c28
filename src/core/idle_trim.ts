/**
 * Gives memory back to the system once a burst of work is over. V8 grows its heap for a burst (20,000
 * messages accepted: ~90 MB of heap, mostly garbage) and, without idle notifications from an embedder, keeps
 * it until the next collection, which an idle relay never triggers; glibc keeps freed memory in its arenas
 * the same way. When a check finds nothing busy, no new activity since the previous check but some since the
 * last trim, and a resident set at least 16 MiB above what the last trim left, one full collection runs (the
 * `gc` function V8 installs with --expose-gc, set from node:v8 at run time) and `malloc_trim(0)` returns free
 * arena memory (through FFI, where libc has it). Both cost a few tens of milliseconds of the event loop, once
 * per quiet spell and never while work is under way.
 */

import v8 from "node:v8";
import vm from "node:vm";

/** How the trim is done; the defaults are the real collector and glibc. */
export interface IdleTrimOptions {
  /** A counter that moves whenever there is work (main.ts: the spool's writes) */
  activity: () => number;
  /** True while work is under way that the counter may not show yet (a long upload, a slow delivery) */
  busy?: () => boolean;
  /** How often activity is looked at (default 2 s); a trim follows one whole quiet interval */
  intervalMs?: number;
  /** Growth of the resident set since the last trim below which there is nothing worth a trim (16 MiB) */
  minGrowth?: number;
  /** The resident set size (default: Deno.memoryUsage().rss) */
  rss?: () => number;
  /** Runs the trim (default: full GC, then malloc_trim) */
  trim?: () => void;
}

let collector: (() => void) | null | undefined;

/** V8's full collection, or undefined where it cannot be had. */
function gcFunction(): (() => void) | undefined {
  if (collector === undefined) {
    try {
      v8.setFlagsFromString("--expose-gc");
      const gc = vm.runInNewContext("gc");
      collector = typeof gc === "function" ? gc as () => void : null;
    } catch {
      collector = null;
    }
  }
  return collector ?? undefined;
}

let libc: { symbols: { malloc_trim: (pad: bigint) => number }; close(): void } | null | undefined;

/** glibc's malloc_trim, or undefined (another libc, or no FFI permission). */
function mallocTrim(): ((pad: bigint) => number) | undefined {
  if (libc === undefined) {
    try {
      libc = Deno.dlopen("libc.so.6", { malloc_trim: { parameters: ["usize"], result: "i32" } });
    } catch {
      libc = null;
    }
  }
  return libc?.symbols.malloc_trim;
}

/** A full collection, then free arena memory back to the system. */
export function trimMemory(): void {
  gcFunction()?.();
  mallocTrim()?.(0n);
}

/** Starts watching for quiet spells; the returned function stops it. */
export function startIdleTrim(options: IdleTrimOptions): () => void {
  const trim = options.trim ?? trimMemory;
  const rss = options.rss ?? (() => Deno.memoryUsage().rss);
  let last = options.activity();
  let trimmedAt = last;
  // What the process held after the last trim (at start: before any burst).
  let floor = rss();
  const timer = setInterval(() => {
    const now = options.activity();
    if (options.busy?.()) {
      // Work in progress counts as activity: the quiet interval starts when it is over.
      last = Number.NaN;
      return;
    }
    if (now === last && now !== trimmedAt && rss() - floor >= (options.minGrowth ?? 16 * 1024 * 1024)) {
      trimmedAt = now;
      trim();
      floor = rss();
    }
    last = now;
  }, options.intervalMs ?? 2_000);
  // A running check must not keep a stopping process alive.
  Deno.unrefTimer(timer);
  return () => clearInterval(timer);
}
