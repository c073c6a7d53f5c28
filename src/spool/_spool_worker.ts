/**
 * The spool worker: owns one {@link SpoolDb} and answers requests from _worker_engine.ts in order.
 * Trusts its parent (same process); answers every request, errors included, so no caller hangs.
 */

import { SpoolDb } from "./_spool_db.ts";
import type { WorkerRequest, WorkerResponse } from "./_worker_engine.ts";

/** The worker's global scope, as far as this file uses it. */
interface WorkerScope {
  onmessage: ((event: MessageEvent<WorkerRequest>) => void) | null;
  postMessage(message: WorkerResponse | { log: string }): void;
}

const scope = globalThis as unknown as WorkerScope;
let db: SpoolDb | undefined;

function handle(request: WorkerRequest): unknown {
  switch (request.method) {
    case "open":
      db = new SpoolDb(request.dir, {
        busyTimeoutMs: request.busyTimeoutMs,
        log: (line) => scope.postMessage({ log: line }),
      });
      return db.open();
    case "commit":
      return need().commit(request.ops);
    case "getEnvelopeJson":
      return need().getEnvelopeJson(request.id);
    case "listEnvelopeJson":
      return need().listEnvelopeJson();
    case "readData":
      return need().readData(request.id);
    case "count":
      return need().count();
    case "close":
      db?.close();
      db = undefined;
      return undefined;
  }
}

function need(): SpoolDb {
  if (db === undefined) throw new Error("Spool is not open");
  return db;
}

scope.onmessage = (event) => {
  const request = event.data;
  let response: WorkerResponse;
  try {
    response = { seq: request.seq, ok: true, value: handle(request) };
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    response = { seq: request.seq, ok: false, name: e.name, message: e.message };
  }
  scope.postMessage(response);
};
