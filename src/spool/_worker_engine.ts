/**
 * Runs the spool database on a dedicated Worker (_spool_worker.ts) so that SQLite's fsync at each COMMIT
 * does not block the event loop that serves SMTP sessions. Requests are answered in order; message data is
 * transferred to the worker, not copied, when the caller gives up a whole buffer.
 * Trusts the worker (same process). If it dies, requests in flight fail (their callers answer 4xx) and a new
 * worker reopens the database; when that fails, or the worker keeps dying, `onFatal` is called so the
 * process can exit for its supervisor instead of answering 452 forever.
 */

import type { RecoveryReport } from "./spool.ts";
import type { BatchOp, SpoolDbOptions } from "./_spool_db.ts";
import type { DbArgs, DbMethod, DbResult, SpoolEngine } from "./_spool_engine.ts";
import { errorMessage } from "../core/error_message.ts";

/** The message of the error a worker dies of when asked to (see {@link WorkerEngine.crash}). */
export const CRASH_REQUESTED = "spool worker crash requested";

/** A request to the spool worker, without its sequence number. */
type RequestBody =
  | { method: "open"; dir: string; options: Omit<SpoolDbOptions, "log"> }
  | { method: "close" | "crash" }
  | { method: "occupy"; flag: SharedArrayBuffer }
  | { method: DbMethod; args: unknown[] };

/** A request to the spool worker. */
export type WorkerRequest = { seq: number } & RequestBody;

/** The worker's answer to one request. */
export type WorkerResponse =
  | { seq: number; ok: true; value: unknown }
  | { seq: number; ok: false; name: string; message: string };

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/** Options of {@link WorkerEngine}. */
export interface WorkerEngineOptions extends Omit<SpoolDbOptions, "log"> {
  log?: (line: string) => void;
  /** Called when the worker cannot be brought back: the spool is unusable from now on */
  onFatal?: (err: Error) => void;
  /** Restarts allowed within `restartWindowMs` before giving up (default 3 in 60 s) */
  maxRestarts?: number;
  restartWindowMs?: number;
}

/** Buffers of store ops that can be moved to the worker instead of copied. */
function transferables(args: unknown[]): Transferable[] {
  const out: Transferable[] = [];
  const ops = args[0];
  if (!Array.isArray(ops)) return out;
  const seen = new Set<ArrayBufferLike>();
  const take = (data: Uint8Array) => {
    const buf = data.buffer;
    // The caller gave the data up: its whole buffer moves (a view keeps its offset on the other side).
    if (buf instanceof ArrayBuffer && !seen.has(buf)) {
      seen.add(buf);
      out.push(buf);
    }
  };
  for (const op of ops as BatchOp[]) {
    if (op.kind === "store" && op.transfer) take(op.data);
  }
  return out;
}

/** The worker-backed {@link SpoolEngine}. */
export class WorkerEngine implements SpoolEngine {
  #worker!: Worker;
  #dir: string;
  #options: WorkerEngineOptions;
  #log: (line: string) => void;
  #seq = 0;
  #pending = new Map<number, Pending>();
  #dead: Error | undefined;
  #opened = false;
  #restarts: number[] = [];
  #reopening: Promise<void> | undefined;

  constructor(dir: string, options: WorkerEngineOptions = {}) {
    this.#dir = dir;
    this.#options = options;
    this.#log = options.log ?? (() => {});
    this.#spawn();
  }

  #spawn(): void {
    const worker = new Worker(new URL("./_spool_worker.ts", import.meta.url).href, { type: "module" });
    this.#worker = worker;
    worker.onmessage = (event: MessageEvent<WorkerResponse | { log: string }>) => {
      const msg = event.data;
      if ("log" in msg) {
        this.#log(msg.log);
        return;
      }
      const waiter = this.#pending.get(msg.seq);
      if (waiter === undefined) return;
      this.#pending.delete(msg.seq);
      if (msg.ok) {
        waiter.resolve(msg.value);
      } else {
        const err = new Error(msg.message);
        err.name = msg.name;
        waiter.reject(err);
      }
    };
    worker.onerror = (event: ErrorEvent) => {
      // Keep the process alive: the spool fails the callers in flight, then comes back or reports fatal.
      event.preventDefault();
      if (worker !== this.#worker) return;
      this.#crashed(new Error(`Spool worker failed: ${event.message}`));
    };
  }

  #crashed(err: Error): void {
    for (const waiter of this.#pending.values()) waiter.reject(err);
    this.#pending.clear();
    this.#worker.terminate();
    if (this.#dead !== undefined) return;
    if (!this.#opened) {
      this.#dead = err;
      return;
    }
    const now = Date.now();
    const window = this.#options.restartWindowMs ?? 60_000;
    this.#restarts = this.#restarts.filter((t) => now - t < window);
    this.#restarts.push(now);
    if (this.#restarts.length > (this.#options.maxRestarts ?? 3)) {
      this.#fatal(new Error(`${err.message}; it failed ${this.#restarts.length} times in ${window} ms`));
      return;
    }
    this.#log(`spool: ${err.message}; starting a new spool worker`);
    this.#spawn();
    this.#reopening = this.#send<RecoveryReport>({
      method: "open",
      dir: this.#dir,
      options: this.#dbOptions(),
    })
      .then((report) => this.#log(`spool: spool worker restarted, ${report.queued} message(s) queued`))
      .catch((e) => this.#fatal(new Error(`Spool worker could not reopen the spool: ${errorMessage(e)}`)))
      .finally(() => (this.#reopening = undefined));
  }

  #fatal(err: Error): void {
    this.#dead ??= err;
    for (const waiter of this.#pending.values()) waiter.reject(err);
    this.#pending.clear();
    this.#worker.terminate();
    this.#log(`spool: ${err.message}`);
    this.#options.onFatal?.(err);
  }

  /** The SpoolDb options among this engine's (all but what stays on this side: functions, restart limits). */
  #dbOptions(): Omit<SpoolDbOptions, "log"> {
    const { log: _log, onFatal: _onFatal, maxRestarts: _max, restartWindowMs: _window, ...db } =
      this.#options;
    return db;
  }

  #send<T>(request: RequestBody, transfer: Transferable[] = []): Promise<T> {
    if (this.#dead !== undefined) return Promise.reject(this.#dead);
    const seq = ++this.#seq;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(seq, { resolve: resolve as (value: unknown) => void, reject });
      try {
        this.#worker.postMessage({ ...request, seq } as WorkerRequest, transfer);
      } catch (err) {
        this.#pending.delete(seq);
        reject(err);
      }
    });
  }

  async open(): Promise<RecoveryReport> {
    const report = await this.#send<RecoveryReport>({
      method: "open",
      dir: this.#dir,
      options: this.#dbOptions(),
    });
    this.#opened = true;
    return report;
  }

  async call<M extends DbMethod>(method: M, ...args: DbArgs<M>): Promise<DbResult<M>> {
    if (this.#reopening !== undefined) await this.#reopening;
    return this.#send<DbResult<M>>({ method, args }, transferables(args));
  }

  /**
   * For tests: the worker blocks (as in a long read) until the returned function is called; resolves once
   * it is blocked.
   */
  async occupy(): Promise<() => void> {
    const flag = new SharedArrayBuffer(4);
    const cell = new Int32Array(flag);
    const done = this.#send({ method: "occupy", flag });
    const waited = Atomics.waitAsync(cell, 0, 0);
    if (waited.async) await waited.value;
    return () => {
      Atomics.store(cell, 0, 2);
      Atomics.notify(cell, 0);
      void done.catch(() => {});
    };
  }

  problem(): string | undefined {
    if (this.#dead !== undefined) return this.#dead.message;
    if (this.#reopening !== undefined) return "spool worker restarting";
    return undefined;
  }

  /**
   * Fault injection for tests: makes the worker die as from an uncaught error. Resolves once the worker took
   * the request, also when its death is seen before its answer (the two come on separate channels, in either
   * order under load).
   */
  crash(): Promise<void> {
    return this.#send<void>({ method: "crash" }).catch((err: Error) => {
      if (!err.message.includes(CRASH_REQUESTED)) throw err;
    });
  }

  async close(): Promise<void> {
    if (this.#dead === undefined) {
      try {
        if (this.#reopening !== undefined) await this.#reopening;
        await this.#send({ method: "close" });
      } finally {
        this.#dead ??= new Error("Spool is closed");
        this.#worker.terminate();
      }
    }
  }
}
