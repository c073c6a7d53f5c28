/**
 * The on-disk spool: `<dir>/spool.db`, SQLite through `node:sqlite` in WAL mode with synchronous=FULL.
 * Group commit: writes (store, update, remove) that arrive while a commit is running, or within a short
 * window, share ONE transaction, and every caller's promise settles only after that COMMIT returned.
 * Trusts the file system's fsync; trusts nothing it reads back (recovery checks every row, see _spool_db.ts).
 */

import type { Envelope } from "../core/envelope.ts";
import { type RecoveryReport, type Spool, type SpoolEntry, SpoolWriteError } from "./spool.ts";
import { newMessageId } from "./message_id.ts";
import type { BatchOp } from "./_spool_db.ts";
import { InlineEngine, type SpoolEngine } from "./_spool_engine.ts";
import { WorkerEngine } from "./_worker_engine.ts";
import { errorMessage } from "../core/error_message.ts";

/** Options of {@link SqliteSpool}. */
export interface SqliteSpoolOptions {
  /** Spool directory; created when missing. Holds spool.db and quarantine/ */
  dir: string;
  /** Receives one line per recovery action (quarantined entry, replaced database) */
  log?: (line: string) => void;
  /**
   * Where SQLite runs: "worker" (default, measured in bench/spool_bench.ts: fsync does not block the event
   * loop) or "main" (the calling thread)
   */
  thread?: "worker" | "main";
  /** Most writes one transaction takes (default 64) */
  maxBatch?: number;
  /**
   * How long an idle spool waits for more writes before committing, ms (default 0: commit as soon as the
   * current task's writes are queued; writes arriving during a commit form the next batch)
   */
  batchWindowMs?: number;
  /** How long a write waits for another process's lock on spool.db, ms (default 5000) */
  busyTimeoutMs?: number;
}

interface Queued {
  op: BatchOp;
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * A {@link Spool} in SQLite. `store()` resolves once data and envelope are committed with a full sync;
 * the caller must not modify `data` before then. Recovery quarantines bad rows as
 * `<dir>/quarantine/<id>.{envelope,data,reason}` (the report's `path` is that name without extension) and
 * an unreadable spool.db as `<dir>/quarantine/spool.db.<timestamp>`.
 */
export class SqliteSpool implements Spool {
  #engine: SpoolEngine;
  #maxBatch: number;
  #windowMs: number;
  #closing?: Promise<void>;
  #state: "new" | "open" | "closing" | "closed" = "new";
  #queue: Queued[] = [];
  #scheduled = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #inFlight: Promise<void> | undefined;
  #commits = 0;
  #writes = 0;

  constructor(options: SqliteSpoolOptions) {
    const engineOptions = { log: options.log, busyTimeoutMs: options.busyTimeoutMs };
    this.#engine = options.thread === "main"
      ? new InlineEngine(options.dir, engineOptions)
      : new WorkerEngine(options.dir, engineOptions);
    this.#maxBatch = Math.max(1, Math.floor(options.maxBatch ?? 64));
    this.#windowMs = Math.max(0, options.batchWindowMs ?? 0);
  }

  /** Opens spool.db, checks every row and quarantines corrupt ones; a damaged file is replaced, never fatal. */
  async open(): Promise<RecoveryReport> {
    if (this.#state !== "new") throw new Error("Spool was already opened");
    try {
      const report = await this.#engine.open();
      this.#state = "open";
      return report;
    } catch (err) {
      this.#state = "closed";
      await this.#engine.close().catch(() => {});
      throw err;
    }
  }

  /** Transactions committed and writes they carried since construction (writes / commits = batch size). */
  get stats(): { commits: number; writes: number } {
    return { commits: this.#commits, writes: this.#writes };
  }

  /** A new Exim-style message id (see message_id.ts). */
  newId(): string {
    return newMessageId();
  }

  /** Stores a message durably (committed with full sync before this resolves); SpoolWriteError when not. */
  store(envelope: Envelope, data: Uint8Array): Promise<void> {
    let envelopeJson: string;
    try {
      envelopeJson = this.#serialize(envelope);
    } catch (err) {
      return Promise.reject(err);
    }
    if (!(data instanceof Uint8Array)) {
      return Promise.reject(new TypeError("Message data must be a Uint8Array"));
    }
    return this.#enqueue({ kind: "store", id: envelope.id, envelopeJson, data, createdAt: Date.now() });
  }

  /** Durably replaces a queued message's envelope; rejects when no message has that id. */
  update(envelope: Envelope): Promise<void> {
    let envelopeJson: string;
    try {
      envelopeJson = this.#serialize(envelope);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#enqueue({ kind: "update", id: envelope.id, envelopeJson });
  }

  /** Removes a message for good; removing an unknown id is not an error. */
  remove(id: string): Promise<void> {
    return this.#enqueue({ kind: "remove", id });
  }

  /** Reads a message's data (checked against its recorded length and SHA-256). */
  async readData(id: string): Promise<Uint8Array> {
    this.#requireOpen();
    const data = await this.#engine.readData(id);
    if (data === undefined) throw new Deno.errors.NotFound(`No queued message "${id}"`);
    return data;
  }

  /** Reads one envelope, or undefined when there is no such message. */
  async get(id: string): Promise<Envelope | undefined> {
    this.#requireOpen();
    const json = await this.#engine.getEnvelopeJson(id);
    return json === undefined ? undefined : JSON.parse(json) as Envelope;
  }

  /** Lists every queued message, oldest first. */
  async list(): Promise<SpoolEntry[]> {
    this.#requireOpen();
    const all = await this.#engine.listEnvelopeJson();
    return all.map((json) => ({ envelope: JSON.parse(json) as Envelope }));
  }

  /** Number of queued messages. */
  async count(): Promise<number> {
    this.#requireOpen();
    return await this.#engine.count();
  }

  /** Commits every queued write, then closes the database (and its worker). */
  close(): Promise<void> {
    // A second close() waits for the first instead of returning while it still commits.
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    if (this.#state === "closed") return;
    if (this.#state === "new") {
      this.#state = "closed";
      await this.#engine.close().catch(() => {});
      return;
    }
    this.#state = "closing";
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#inFlight !== undefined || this.#queue.length > 0) {
      if (this.#inFlight !== undefined) await this.#inFlight;
      else await this.#flush();
    }
    this.#state = "closed";
    await this.#engine.close();
  }

  #serialize(envelope: Envelope): string {
    if (typeof envelope?.id !== "string" || envelope.id === "") {
      throw new TypeError("Envelope must have a non-empty string id");
    }
    return JSON.stringify(envelope);
  }

  #requireOpen(): void {
    if (this.#state !== "open" && this.#state !== "closing") throw new Error("Spool is not open");
  }

  #enqueue(op: BatchOp): Promise<void> {
    if (this.#state !== "open") {
      return Promise.reject(new SpoolWriteError(`Spool is not open (state "${this.#state}")`));
    }
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ op, resolve, reject });
      this.#schedule();
    });
  }

  /** Starts a commit now, after the current task, or after the window; never while one is running. */
  #schedule(): void {
    if (this.#inFlight !== undefined || this.#scheduled) return;
    if (this.#queue.length >= this.#maxBatch) {
      if (this.#timer !== undefined) clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#scheduled = true;
      queueMicrotask(() => void this.#flush());
      return;
    }
    if (this.#timer !== undefined) return;
    if (this.#windowMs === 0) {
      this.#scheduled = true;
      queueMicrotask(() => void this.#flush());
    } else {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        void this.#flush();
      }, this.#windowMs);
    }
  }

  #flush(): Promise<void> {
    this.#scheduled = false;
    if (this.#inFlight !== undefined) return this.#inFlight;
    if (this.#queue.length === 0) return Promise.resolve();
    const batch = this.#queue.splice(0, this.#maxBatch);
    this.#inFlight = this.#commit(batch).finally(() => {
      this.#inFlight = undefined;
      // Writes that queued during this commit have waited long enough: commit them right away.
      if (this.#queue.length > 0 && this.#state === "open") {
        if (this.#timer !== undefined) clearTimeout(this.#timer);
        this.#timer = undefined;
        this.#scheduled = true;
        queueMicrotask(() => void this.#flush());
      }
    });
    return this.#inFlight;
  }

  async #commit(batch: Queued[]): Promise<void> {
    try {
      const results = await this.#engine.commit(batch.map((q) => q.op));
      this.#commits++;
      this.#writes += batch.length;
      batch.forEach((q, i) => {
        const result = results[i];
        if (result?.ok) q.resolve();
        else q.reject(new SpoolWriteError(result?.message ?? "Spool commit returned no result"));
      });
    } catch (err) {
      const message = errorMessage(err);
      for (const q of batch) q.reject(new SpoolWriteError(message, { cause: err }));
    }
  }
}
