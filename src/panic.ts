/**
 * The process's last line of defence: an unhandled promise rejection or an uncaught exception, which Deno
 * would otherwise answer by killing the process on the spot (every session dropped mid-reply, the log's
 * queued lines lost). Installed by the command line only (`main()`), never by code tests import: it logs the
 * error with its stack under `panic:` lines, on standard error too, and asks for a graceful stop; the caller
 * then exits non-zero (EX_SOFTWARE) for the supervisor to restart Ferry, as Postfix's master restarts a
 * daemon that died. The durable spool keeps every message already answered 250.
 */

import type { Logger } from "./core/log.ts";

/** Exit status after a panic (sysexits.h EX_SOFTWARE). */
export const PANIC_EXIT = 70;

/** What a panic handler needs from the program. */
export interface PanicOptions {
  /** The main log, once it is open */
  log(): Logger | undefined;
  /** Called on the first panic only: start the graceful stop */
  stop(): void;
}

/** The installed handlers; `panicked` tells the caller to exit with {@link PANIC_EXIT}. */
export interface PanicHandlers {
  readonly panicked: boolean;
  /** Removes the handlers (Deno's own behaviour is back) */
  remove(): void;
}

/** Lines describing `err`: its first line, then its stack frames. */
function describe(err: unknown): { head: string; frames: string[] } {
  if (err instanceof Error) {
    const frames = (err.stack ?? "").split("\n").filter((l) => /^\s+at /.test(l)).map((l) => l.trim());
    const cause = err.cause === undefined ? "" : ` (cause: ${safeString(err.cause)})`;
    return { head: `${err.name}: ${err.message}${cause}`, frames };
  }
  return { head: safeString(err), frames: [] };
}

/** String(x) for anything, even an object whose conversion throws. */
function safeString(x: unknown): string {
  try {
    return x instanceof Error ? `${x.name}: ${x.message}` : String(x);
  } catch {
    return Object.prototype.toString.call(x);
  }
}

/** Installs the `unhandledrejection` and `error` handlers on the global scope. */
export function installPanicHandlers(opts: PanicOptions): PanicHandlers {
  let panicked = false;
  const panic = (kind: string, err: unknown) => {
    const first = !panicked;
    panicked = true;
    const { head, frames } = describe(err);
    const what = `panic: ${kind}: ${head}`;
    const tail = first ? `; stopping, exit status ${PANIC_EXIT}` : " (already stopping)";
    try {
      console.error(`ferry: ${what}${frames.map((f) => `\n    ${f}`).join("")}`);
    } catch { /* no stderr: the log below still has it */ }
    const log = opts.log();
    if (log) {
      try {
        log.write(`${what}${tail}`, { event: "panic", kind, stack: frames.join("\n") });
        for (const f of frames) log.write(`panic:     ${f}`);
      } catch { /* stderr has it */ }
    }
    if (first) opts.stop();
  };
  const onRejection = (e: PromiseRejectionEvent) => {
    e.preventDefault();
    panic("unhandled rejection", e.reason);
  };
  const onError = (e: ErrorEvent) => {
    e.preventDefault();
    panic("uncaught exception", e.error ?? e.message);
  };
  globalThis.addEventListener("unhandledrejection", onRejection);
  globalThis.addEventListener("error", onError);
  return {
    get panicked() {
      return panicked;
    },
    remove() {
      globalThis.removeEventListener("unhandledrejection", onRejection);
      globalThis.removeEventListener("error", onError);
    },
  };
}
