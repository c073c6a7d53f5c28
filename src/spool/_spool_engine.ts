/**
 * Where the spool's SQLite work runs: the {@link SpoolEngine} seam between the group-commit front
 * (sqlite_spool.ts) and the synchronous database (_spool_db.ts). The inline engine runs it on the calling
 * thread; the worker engine (_worker_engine.ts) on a dedicated Worker so fsync never blocks the event loop.
 */

import type { RecoveryReport } from "./spool.ts";
import { SpoolDb, type SpoolDbOptions } from "./_spool_db.ts";

/** The SpoolDb methods an engine forwards. */
export type DbMethod =
  | "commit"
  | "claim"
  | "get"
  | "listEnvelopes"
  | "readData"
  | "readHead"
  | "query"
  | "row"
  | "history"
  | "summary"
  | "nextDue"
  | "count"
  | "checkpoint"
  | "checkpointHere";

/** A forwarded method's arguments. */
export type DbArgs<M extends DbMethod> = Parameters<SpoolDb[M]>;
/** A forwarded method's result. */
export type DbResult<M extends DbMethod> = ReturnType<SpoolDb[M]>;

/** The asynchronous face of a {@link SpoolDb}, wherever it runs. */
export interface SpoolEngine {
  open(): Promise<RecoveryReport>;
  /** Runs one SpoolDb method; `commit` rejects with a BatchCommitError-named error when the batch failed. */
  call<M extends DbMethod>(method: M, ...args: DbArgs<M>): Promise<DbResult<M>>;
  close(): Promise<void>;
  /** Why the engine cannot serve now (its worker failed for good, or is being restarted); undefined when it can */
  problem?(): string | undefined;
}

/** Runs the database on the calling thread (each commit blocks the event loop for its fsync). */
export class InlineEngine implements SpoolEngine {
  #db: SpoolDb;

  constructor(dir: string, options: SpoolDbOptions) {
    this.#db = new SpoolDb(dir, options);
  }

  open(): Promise<RecoveryReport> {
    return Promise.try(() => this.#db.open());
  }
  call<M extends DbMethod>(method: M, ...args: DbArgs<M>): Promise<DbResult<M>> {
    return Promise.try(() => (this.#db[method] as (...a: unknown[]) => DbResult<M>)(...args));
  }
  close(): Promise<void> {
    return Promise.try(() => this.#db.close());
  }
}
