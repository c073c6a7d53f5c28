/**
 * The accept loop of one listener. Nothing a peer or the kernel does may stop it for good: a connection
 * reset before accept is skipped, other errors (out of file descriptors) back off and retry, and a listener
 * that broke while Ferry is not stopping (BadResource) is opened again on the same address.
 */

import { errorMessage } from "../core/error_message.ts";

/** The part of a Deno.Listener the loop uses. */
export interface AcceptSource {
  accept(): Promise<Deno.Conn>;
  close(): void;
}

/** What the loop reports to and asks of its owner. */
export interface AcceptLoopOptions {
  /** True once the owner is stopping: a failing accept then ends the loop quietly */
  stopping(): boolean;
  /** Takes ownership of an accepted connection (must not throw) */
  connection(conn: Deno.Conn): void;
  /** Opens the listener again after it broke; the loop accepts from what it returns */
  reopen(): AcceptSource;
  /** Writes a log line */
  log(text: string): void;
  /** Longest pause between retries (ms; default 1000) */
  maxPauseMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Accepts from `listener` until the owner stops; resolves then. */
export async function acceptLoop(listener: AcceptSource, opts: AcceptLoopOptions): Promise<void> {
  const maxPause = opts.maxPauseMs ?? 1000;
  let pause = 0;
  const backoff = async (what: string) => {
    pause = Math.min(maxPause, pause ? pause * 2 : 100);
    opts.log(`${what}; retrying in ${pause} ms`);
    await sleep(pause);
  };
  for (;;) {
    let conn: Deno.Conn;
    try {
      conn = await listener.accept();
    } catch (err) {
      if (opts.stopping()) return;
      // A peer that reset before accept (NotConnected) says nothing about the listener.
      if (err instanceof Deno.errors.NotConnected || err instanceof Deno.errors.ConnectionReset) continue;
      if (err instanceof Deno.errors.BadResource) {
        // The listening socket is gone though nobody asked to stop: open it again, however long it takes.
        let why: unknown = err;
        for (;;) {
          await backoff(`listener failed: ${errorMessage(why)}; reopening`);
          if (opts.stopping()) return;
          try {
            listener = opts.reopen();
            opts.log("listener reopened");
            break;
          } catch (reopenErr) {
            why = reopenErr;
          }
        }
        if (opts.stopping()) {
          try {
            listener.close();
          } catch { /* closed */ }
          return;
        }
        continue;
      }
      // Anything else (out of file descriptors) would fail again at once: wait, growing the pause.
      await backoff(`accept failed: ${errorMessage(err)}`);
      continue;
    }
    pause = 0;
    try {
      // Replies are small and answer a whole pipelined batch: send them at once, not after a delayed ACK.
      (conn as Deno.TcpConn).setNoDelay?.(true);
    } catch (err) {
      // Only an optimisation: the connection is served all the same (a peer that already reset is noticed
      // by the session's first read).
      opts.log(`setNoDelay failed: ${errorMessage(err)}`);
    }
    opts.connection(conn);
  }
}
