/**
 * The spool worker: owns one {@link SpoolDb} and answers requests from _worker_engine.ts in order.
 * Trusts its parent (same process); answers every request, errors included, so no caller hangs.
 * Data read back is transferred, not copied, to the parent.
 */

import { SpoolDb } from "./_spool_db.ts";
import { CRASH_REQUESTED, type WorkerRequest, type WorkerResponse } from "./_worker_engine.ts";

/** The worker's global scope, as far as this file uses it. */
interface WorkerScope {
  onmessage: ((event: MessageEvent<WorkerRequest>) => void) | null;
  postMessage(message: WorkerResponse | { log: string }, transfer?: Transferable[]): void;
}

const scope = globalThis as unknown as WorkerScope;
let db: SpoolDb | undefined;

function handle(request: WorkerRequest): unknown {
  switch (request.method) {
    case "open":
      db = new SpoolDb(request.dir, {
        ...request.options,
        log: (line) => scope.postMessage({ log: line }),
      });
      return db.open();
    case "close":
      db?.close();
      db = undefined;
      return undefined;
    case "occupy": {
      // For tests: busy as in a long read, until the parent lets go.
      const cell = new Int32Array(request.flag);
      Atomics.store(cell, 0, 1);
      Atomics.notify(cell, 0);
      Atomics.wait(cell, 0, 1);
      return undefined;
    }
    case "crash":
      // Fault injection for tests: an uncaught error kills this worker like a real crash would.
      setTimeout(() => {
        throw new Error(CRASH_REQUESTED);
      });
      return undefined;
    default: {
      if (db === undefined) throw new Error("Spool is not open");
      const fn = db[request.method] as (...args: unknown[]) => unknown;
      return fn.apply(db, request.args);
    }
  }
}

scope.onmessage = (event) => {
  const request = event.data;
  let response: WorkerResponse;
  const transfer: Transferable[] = [];
  try {
    const value = handle(request);
    response = { seq: request.seq, ok: true, value };
    const data = (value as { data?: unknown } | undefined)?.data;
    if (request.method === "readData" && data instanceof Uint8Array && data.byteOffset === 0) {
      transfer.push(data.buffer as ArrayBuffer);
    }
    // Data claimed with its message moves too.
    if (request.method === "claim" && Array.isArray(value)) {
      for (const claimed of value as { data?: unknown }[]) {
        const d = claimed.data;
        if (d instanceof Uint8Array && d.byteOffset === 0 && d.byteLength === d.buffer.byteLength) {
          transfer.push(d.buffer as ArrayBuffer);
        }
      }
    }
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    response = { seq: request.seq, ok: false, name: e.name, message: e.message };
  }
  scope.postMessage(response, transfer);
};
