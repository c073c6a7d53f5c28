/**
 * Where the spool's SQLite work runs: the {@link SpoolEngine} seam between the group-commit front
 * (sqlite_spool.ts) and the synchronous database (_spool_db.ts). The inline engine runs it on the calling
 * thread; the worker engine (_worker_engine.ts) on a dedicated Worker so fsync never blocks the event loop.
 */

import type { RecoveryReport } from "./spool.ts";
import { type BatchOp, type OpResult, SpoolDb, type SpoolDbOptions } from "./_spool_db.ts";

/** The asynchronous face of a {@link SpoolDb}, wherever it runs. */
export interface SpoolEngine {
  open(): Promise<RecoveryReport>;
  /** Commits ops in one transaction; rejects with a BatchCommitError-named error when the batch failed. */
  commit(ops: BatchOp[]): Promise<OpResult[]>;
  getEnvelopeJson(id: string): Promise<string | undefined>;
  listEnvelopeJson(): Promise<string[]>;
  readData(id: string): Promise<Uint8Array | undefined>;
  count(): Promise<number>;
  close(): Promise<void>;
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
  commit(ops: BatchOp[]): Promise<OpResult[]> {
    return Promise.try(() => this.#db.commit(ops));
  }
  getEnvelopeJson(id: string): Promise<string | undefined> {
    return Promise.try(() => this.#db.getEnvelopeJson(id));
  }
  listEnvelopeJson(): Promise<string[]> {
    return Promise.try(() => this.#db.listEnvelopeJson());
  }
  readData(id: string): Promise<Uint8Array | undefined> {
    return Promise.try(() => this.#db.readData(id));
  }
  count(): Promise<number> {
    return Promise.try(() => this.#db.count());
  }
  close(): Promise<void> {
    return Promise.try(() => this.#db.close());
  }
}
