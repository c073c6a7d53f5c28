/**
 * Postfix's `smtp-sink` as the benchmark's final destination (RFC 5321 server that discards mail).
 *
 * Started as `smtp-sink -u nobody -c 127.0.0.1:PORT 1000`: nothing is dumped, it only counts. With `-c`
 * it writes a running counter (`sess=N quit=N mesg=N`, CR-separated) to stdout each time a session ends,
 * a QUIT arrives or a message's final "." is received; this module reads that stream and stamps each new
 * `mesg` value with the time it was read, so arrivals are timed to the millisecond without any per-message
 * file. Trusts the local smtp-sink binary; every wait has a deadline and stop() always ends the child.
 *
 * @module
 */

import { freePort } from "./_postfix.ts";
import { terminate } from "./_process.ts";

/** A running counting smtp-sink. */
export interface CountingSink {
  /** Listening address. */
  host: string;
  /** Listening port. */
  port: number;
  /** Messages received so far (final "." answered). */
  count(): number;
  /** Arrival times (performance.now()) of messages number `from`+1 onward, one entry per message. */
  arrivalsAfter(from: number): number[];
  /** Resolves true once count() ≥ n, false when `timeoutMs` passes first. */
  waitFor(n: number, timeoutMs: number): Promise<boolean>;
  /** Ends the child (SIGTERM, then SIGKILL after 5 s). */
  stop(): Promise<void>;
}

/** Starts a counting smtp-sink on a free loopback port and waits until it accepts connections. */
export async function startCountingSink(options: { backlog?: number } = {}): Promise<CountingSink> {
  const port = freePort();
  const child = new Deno.Command("/usr/sbin/smtp-sink", {
    args: ["-u", "nobody", "-c", `127.0.0.1:${port}`, String(options.backlog ?? 1000)],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // arrivals[i] is when message i+1 was seen.
  const arrivals: number[] = [];
  let waiters: { n: number; resolve: () => void }[] = [];
  let stderr = "";
  const readOut = (async () => {
    let pending = "";
    for await (const text of child.stdout.pipeThrough(new TextDecoderStream())) {
      const now = performance.now();
      pending += text;
      const parts = pending.split(/[\r\n]/);
      pending = parts.pop() ?? "";
      for (const p of parts) {
        const m = /mesg=(\d+)/.exec(p);
        if (!m) continue;
        const n = Number(m[1]);
        while (arrivals.length < n) arrivals.push(now);
      }
      if (waiters.length) {
        const due = waiters.filter((w) => arrivals.length >= w.n);
        waiters = waiters.filter((w) => arrivals.length < w.n);
        for (const w of due) w.resolve();
      }
    }
  })().catch(() => undefined);
  const readErr = (async () => {
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
      stderr = (stderr + text).slice(-2000);
    }
  })().catch(() => undefined);
  let exited = false;
  const status = child.status.finally(() => exited = true);
  const stop = async () => {
    if (!exited) await terminate(child, status, 5_000);
    await Promise.all([readOut, readErr]);
  };
  const deadline = Date.now() + 5_000;
  for (;;) {
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      break;
    } catch {
      if (exited || Date.now() > deadline) {
        await stop();
        throw new Error(`smtp-sink did not start on 127.0.0.1:${port}: ${stderr.trim()}`);
      }
      await new Promise((r) => setTimeout(r, 30));
    }
  }
  return {
    host: "127.0.0.1",
    port,
    // The readiness probe above is a session without a message: it moves sess=, not mesg=.
    count: () => arrivals.length,
    arrivalsAfter: (from) => arrivals.slice(from),
    waitFor(n, timeoutMs) {
      if (arrivals.length >= n) return Promise.resolve(true);
      return new Promise<boolean>((resolve) => {
        const w = { n, resolve: () => (clearTimeout(timer), resolve(true)) };
        const timer = setTimeout(() => {
          waiters = waiters.filter((x) => x !== w);
          resolve(false);
        }, timeoutMs);
        waiters.push(w);
      });
    },
    stop,
  };
}
