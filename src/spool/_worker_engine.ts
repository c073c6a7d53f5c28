/**
 * Runs the spool database on a dedicated Worker (_spool_worker.ts) so that SQLite's fsync at each COMMIT
 * does not block the event loop that serves SMTP sessions. Requests are answered in order.
 * Trusts the worker (same process); if it dies, every pending and later request fails instead of hanging.
 */

import type { RecoveryReport } from "./spool.ts";
import type { BatchOp, OpResult } from "./_spool_db.ts";
import type { SpoolEngine } from "./_spool_engine.ts";

/** A request to the spool worker. */
export type WorkerRequest =
  & { seq: number }
  & (
    | { method: "open"; dir: string; busyTimeoutMs?: number }
    | { method: "commit"; ops: BatchOp[] }
    | { method: "getEnvelopeJson" | "readData"; id: string }
    | { method: "listEnvelopeJson" | "count" | "close" }
  );

/** The worker's answer to one request. */
export type WorkerResponse =
  | { seq: number; ok: true; value: unknown }
  | { seq: number; ok: false; name: string; message: string };

/** Distributes `Omit` over a union (so each request kind keeps its own fields). */
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

interface Pending {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/** The worker-backed {@link SpoolEngine}. */
export class WorkerEngine implements SpoolEngine {
  #worker: Worker;
  #dir: string;
  #busyTimeoutMs: number | undefined;
  #log: (line: string) => void;
  #seq = 0;
  #pending = new Map<number, Pending>();
  #dead: Error | undefined;

  constructor(dir: string, options: { log?: (line: string) => void; busyTimeoutMs?: number }) {
    this.#dir = dir;
    this.#busyTimeoutMs = options.busyTimeoutMs;
    this.#log = options.log ?? (() => {});
    this.#worker = new Worker(new URL("./_spool_worker.ts", import.meta.url).href, { type: "module" });
    this.#worker.onmessage = (event: MessageEvent<WorkerResponse | { log: string }>) => {
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
    this.#worker.onerror = (event: ErrorEvent) => {
      // Keep the process alive: the spool fails its callers, it does not take the server down.
      event.preventDefault();
      this.#fail(new Error(`Spool worker failed: ${event.message}`));
    };
  }

  #fail(err: Error): void {
    this.#dead ??= err;
    for (const waiter of this.#pending.values()) waiter.reject(err);
    this.#pending.clear();
    this.#worker.terminate();
  }

  #call<T>(request: DistributiveOmit<WorkerRequest, "seq">): Promise<T> {
    if (this.#dead !== undefined) return Promise.reject(this.#dead);
    const seq = ++this.#seq;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(seq, { resolve: resolve as (value: unknown) => void, reject });
      try {
        this.#worker.postMessage({ ...request, seq } as WorkerRequest);
      } catch (err) {
        this.#pending.delete(seq);
        reject(err);
      }
    });
  }

  open(): Promise<RecoveryReport> {
    return this.#call({ method: "open", dir: this.#dir, busyTimeoutMs: this.#busyTimeoutMs });
  }
  commit(ops: BatchOp[]): Promise<OpResult[]> {
    return this.#call({ method: "commit", ops });
  }
  getEnvelopeJson(id: string): Promise<string | undefined> {
    return this.#call({ method: "getEnvelopeJson", id });
  }
  listEnvelopeJson(): Promise<string[]> {
    return this.#call({ method: "listEnvelopeJson" });
  }
  readData(id: string): Promise<Uint8Array | undefined> {
    return this.#call({ method: "readData", id });
  }
  count(): Promise<number> {
    return this.#call({ method: "count" });
  }
  async close(): Promise<void> {
    if (this.#dead === undefined) {
      try {
        await this.#call({ method: "close" });
      } finally {
        this.#fail(new Error("Spool is closed"));
      }
    }
  }
}
