/**
 * The on-disk spool: `<dir>/spool.db`, SQLite through `node:sqlite` in WAL mode with synchronous=FULL.
 * Group commit: writes (store, update, apply, claim, state changes, remove) that arrive while a commit is
 * running, or within a short window, share ONE transaction (one failing write is rolled back alone), and
 * every caller's promise settles only after that COMMIT returned. Reads (bodies, envelopes, listings) go to
 * a second, read-only connection on its own thread: WAL lets it read beside the writer, so a 50 MB body or a
 * long listing never delays an inbound commit. One process a spool: `<dir>/ferry.lock`.
 * Trusts the file system's fsync; trusts nothing it reads back (digests are checked on read, _spool_db.ts).
 */

import type { Envelope } from "../core/envelope.ts";
import {
  type Claimed,
  CorruptMessageError,
  type DeliveryUpdate,
  type QueueQuery,
  type QueueRow,
  type QueueState,
  type QueueSummary,
  type RecoveryReport,
  type Spool,
  type SpoolEntry,
  SpoolLockedError,
  SpoolWriteError,
} from "./spool.ts";
import { newMessageId } from "./message_id.ts";
import type { BatchOp, OpResult } from "./_spool_db.ts";
import { InlineEngine, type SpoolEngine } from "./_spool_engine.ts";
import { WorkerEngine } from "./_worker_engine.ts";
import { errorMessage } from "../core/error_message.ts";

/** Least time between two checkpoints on the checkpoint thread, ms */
const CHECKPOINT_EVERY_MS = 50;
/** WAL frames (pages) past which the writer finishes a checkpoint itself, so that the WAL starts over */
export const RESTART_FRAMES = 4096;

/** Options of {@link SqliteSpool}. */
export interface SqliteSpoolOptions {
  /** Spool directory; created when missing. Holds spool.db, ferry.lock and quarantine/ */
  dir: string;
  /** Receives one line per recovery action (quarantined entry, replaced database, corrupt message) */
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
  /** Keep everything in memory (unit tests of other rooms): nothing durable, no lock, no files */
  memory?: boolean;
  /**
   * Open an existing spool without the lock, read-only (the queue command beside a running Ferry): writes
   * are refused
   */
  readOnly?: boolean;
  /** Called when the spool worker died and could not be restarted (main.ts exits non-zero) */
  onFatal?: (err: Error) => void;
  /**
   * With less than this many octets available on the spool's file system, the space of removed messages is
   * given back to it at once (default 0: only once the disk was found full); main.ts passes spool.minFree
   */
  giveBackBelow?: number;
}

/** The lock file's name inside the spool directory. */
export const LOCK_FILE = "ferry.lock";

interface Queued {
  op: BatchOp;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/**
 * A {@link Spool} in SQLite. `store()` resolves once data and envelope are committed with a full sync;
 * the caller must not modify `data` before then. An unreadable spool.db moves to
 * `<dir>/quarantine/spool.db.<timestamp>`; schema-1 rows that cannot be converted go to
 * `<dir>/quarantine/<id>.{envelope,data,reason}`; a message whose data fails its digest stays in the
 * database in state `corrupt`.
 */
export class SqliteSpool implements Spool {
  /** Writes (and, for an in-memory or read-only spool, everything) */
  #engine: SpoolEngine;
  /** Reads: a read-only connection beside the writer, or the writer itself when there is none */
  #reader: SpoolEngine;
  /** The reader is open; until then (and if it cannot open) reads go to the writer */
  #readerUp = false;
  #readerOpening: Promise<void> | undefined;
  /** Settles when the last write issued (enqueued op or claim) is committed or refused */
  #lastWrite: Promise<void> = Promise.resolve();
  #log: (line: string) => void;
  #maxBatch: number;
  #windowMs: number;
  #closing?: Promise<void>;
  #state: "new" | "open" | "closing" | "closed" = "new";
  #queue: Queued[] = [];
  #scheduled = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #inFlight: Promise<void> | undefined;
  /** The thread that copies the WAL into spool.db beside the writer (see #scheduleCheckpoint) */
  #checkpointer: WorkerEngine | undefined;
  #checkpointerUp = false;
  /** The writer's options, which a restarted writer opens with (checkpoints are its own once the thread is gone) */
  #writerOptions: { checkpointByCaller: boolean };
  #checkpointing: Promise<void> | undefined;
  /** Written since the last checkpoint began */
  #uncheckpointed = false;
  #checkpointTimer: ReturnType<typeof setTimeout> | undefined;
  #lastCheckpoint = 0;
  /** Why the last checkpoint failed, while they fail (logged once, not every 50 ms) */
  #checkpointFailure: string | undefined;
  #commits = 0;
  #writes = 0;
  #onCommit: ((seconds: number, writes: number) => void) | undefined;
  #dir: string;
  #lockless: boolean;
  #memory: boolean;
  #lock: Deno.FsFile | undefined;

  constructor(options: SqliteSpoolOptions) {
    const engineOptions = {
      log: options.log,
      busyTimeoutMs: options.busyTimeoutMs,
      memory: options.memory,
      readOnly: options.readOnly,
      onFatal: options.onFatal,
      giveBackBelow: options.giveBackBelow,
    };
    this.#dir = options.dir;
    this.#memory = options.memory === true;
    this.#lockless = this.#memory || options.readOnly === true;
    this.#log = options.log ?? (() => {});
    // A spool on its own threads checkpoints on a third one; on the calling thread (tests), SQLite does.
    const checkpointThread = options.thread !== "main" && !this.#lockless;
    const writerOptions = { ...engineOptions, checkpointByCaller: checkpointThread };
    this.#writerOptions = writerOptions;
    this.#engine = options.thread === "main" || options.memory
      ? new InlineEngine(options.dir, writerOptions)
      : new WorkerEngine(options.dir, writerOptions);
    if (checkpointThread) {
      this.#checkpointer = new WorkerEngine(options.dir, {
        ...engineOptions,
        checkpointer: true,
        onFatal: (err: Error) => this.#checkpointerGone(err),
      });
    }
    // An in-memory database cannot be shared, and a read-only spool has no writer to keep free.
    const readerOptions = {
      ...engineOptions,
      readOnly: true,
      // A reader that cannot be brought back is not fatal: reads go back to the writer.
      onFatal: (err: Error) => {
        this.#readerUp = false;
        this.#log(`spool: the read-only connection is gone, reads share the writer: ${err.message}`);
      },
    };
    this.#reader = this.#lockless
      ? this.#engine
      : options.thread === "main"
      ? new InlineEngine(options.dir, readerOptions)
      : new WorkerEngine(options.dir, readerOptions);
    this.#maxBatch = Math.max(1, Math.floor(options.maxBatch ?? 64));
    this.#windowMs = Math.max(0, options.batchWindowMs ?? 0);
  }

  /**
   * Takes the directory's lock, opens spool.db (converting an older schema), and returns claims of an
   * earlier run to the queue; never reads a body. A damaged file is replaced, never fatal; a spool another
   * process holds is SpoolLockedError.
   */
  async open(): Promise<RecoveryReport> {
    if (this.#state !== "new") throw new Error("Spool was already opened");
    try {
      if (!this.#lockless) this.#takeLock();
      const report = await this.#engine.open();
      // After the writer (it creates and converts the file the reader opens), and not waited for: start-up
      // does not pay for a second thread, reads go to the writer until the reader is up.
      if (this.#reader !== this.#engine) {
        this.#readerOpening = this.#reader.open().then(
          () => void (this.#readerUp = true),
          (err) =>
            this.#log(
              `spool: the read-only connection did not open, reads share the writer: ${errorMessage(err)}`,
            ),
        );
      }
      if (this.#checkpointer !== undefined) {
        this.#checkpointer.open().then(
          () => void (this.#checkpointerUp = this.#state === "open"),
          (err) => this.#checkpointerGone(err),
        );
      }
      this.#state = "open";
      return report;
    } catch (err) {
      this.#state = "closed";
      await this.#engine.close().catch(() => {});
      if (this.#reader !== this.#engine) await this.#reader.close().catch(() => {});
      await this.#checkpointer?.close().catch(() => {});
      this.#releaseLock();
      throw err;
    }
  }

  /** One Ferry a spool: an exclusive flock on `<dir>/ferry.lock`, held until close (or process exit). */
  #takeLock(): void {
    Deno.mkdirSync(this.#dir, { recursive: true });
    const path = `${this.#dir.replace(/\/+$/, "")}/${LOCK_FILE}`;
    const file = Deno.openSync(path, { read: true, write: true, create: true });
    if (!file.tryLockSync(true)) {
      file.close();
      throw new SpoolLockedError(
        `spool directory "${this.#dir}" is in use by another Ferry process (lock "${path}" is held)`,
      );
    }
    this.#lock = file;
  }

  #releaseLock(): void {
    try {
      this.#lock?.close();
    } catch { /* closing releases the lock; nothing more to do */ }
    this.#lock = undefined;
  }

  /** Fault injection for tests: makes the spool worker die as from an uncaught error. */
  crashWorkerForTest(): Promise<void> {
    if (!(this.#engine instanceof WorkerEngine)) throw new Error("Spool runs without a worker");
    return this.#engine.crash();
  }

  /** Fault injection for tests: makes the checkpoint thread die as from an uncaught error. */
  crashCheckpointerForTest(): Promise<void> {
    if (this.#checkpointer === undefined) throw new Error("Spool has no checkpoint thread");
    return this.#checkpointer.crash();
  }

  /**
   * For tests: keeps the reader's thread busy (as a long read would) until the returned function is called;
   * resolves once it is busy.
   */
  async occupyReaderForTest(): Promise<() => void> {
    await this.#readerOpening;
    if (!(this.#reader instanceof WorkerEngine) || !this.#readerUp) {
      throw new Error("Spool has no reader thread");
    }
    return await this.#reader.occupy();
  }

  /** Why the spool cannot take writes now (not open, its worker failed for good or restarting); else undefined. */
  problem(): string | undefined {
    if (this.#state !== "open") return `spool is ${this.#state}`;
    return this.#engine.problem?.();
  }

  /** Calls `fn` after each group commit with its latency in seconds and the writes it carried (metrics). */
  observeCommits(fn: (seconds: number, writes: number) => void): void {
    this.#onCommit = fn;
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
  store(
    envelope: Envelope,
    data: Uint8Array,
    options: { transfer?: boolean; history?: string[] } = {},
  ): Promise<void> {
    try {
      envelope = this.#check(envelope);
    } catch (err) {
      return Promise.reject(err);
    }
    if (!(data instanceof Uint8Array)) {
      return Promise.reject(new TypeError("Message data must be a Uint8Array"));
    }
    const history = options.history?.length ? options.history.map(String) : undefined;
    return this.#enqueue({
      kind: "store",
      envelope,
      data,
      transfer: options.transfer === true,
      history,
      now: Date.now(),
    })
      .then(() => {});
  }

  /** Durably replaces a queued message's recipient states and outbound state; rejects for an unknown id. */
  update(envelope: Envelope): Promise<void> {
    try {
      envelope = this.#check(envelope);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#enqueue({ kind: "update", envelope }).then(() => {});
  }

  /** Applies one delivery update atomically (recipient rows, reports, history, state). */
  apply(update: DeliveryUpdate): Promise<void> {
    try {
      const reports = update.reports?.map((r) => ({ envelope: this.#check(r.envelope), data: r.data }));
      update = { ...JSON.parse(JSON.stringify({ ...update, reports: undefined })), reports };
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#enqueue({ kind: "apply", update, now: Date.now() }).then(() => {});
  }

  /**
   * Moves due messages (incoming first) to `active` and returns them, with envelopes (and small data). Not
   * part of a group commit: a claim needs no sync (see SpoolDb.claim), so it does not wait for one.
   */
  async claim(now: number, limit: number, options: { dataUpTo?: number } = {}): Promise<Claimed[]> {
    const refused = this.#refusesWrites();
    if (refused) throw refused;
    try {
      const claimed = this.#engine.call("claim", now, limit, options.dataUpTo ?? 0);
      this.#lastWrite = claimed.then(() => {}, () => {});
      const out = await claimed;
      this.#written();
      return out;
    } catch (err) {
      throw new SpoolWriteError(errorMessage(err), { cause: err });
    }
  }

  /** Changes a message's state (see {@link Spool.setState}). */
  async setState(
    id: string,
    state: QueueState,
    options: { from?: QueueState[]; reason?: string; nextAttempt?: number } = {},
  ): Promise<boolean> {
    return (await this.#enqueue({ kind: "setState", id, state, ...options })) as boolean;
  }

  /** Makes pending recipients (of one domain, or all) due at `at`; resolves to the number of messages. */
  async retryNow(domain: string | undefined, at: number): Promise<number> {
    const d = domain === undefined ? undefined : domain.toLowerCase().replace(/\.$/, "");
    return (await this.#enqueue({ kind: "retryNow", domain: d, at })) as number;
  }

  /** Removes a message for good; removing an unknown id is not an error. */
  remove(id: string): Promise<void> {
    return this.#enqueue({ kind: "remove", id }).then(() => {});
  }

  /** Reads a message's data; CorruptMessageError (and state `corrupt`) when it fails its digest. */
  async readData(id: string): Promise<Uint8Array> {
    this.#requireOpen();
    const reader = await this.#reads();
    const result = await reader.call("readData", id);
    if (result.kind === "missing") throw new Deno.errors.NotFound(`No queued message "${id}"`);
    if (result.kind === "corrupt") {
      // The writer marks what it reads itself; the read-only connection cannot.
      if (reader !== this.#engine) await this.#markCorrupt(id, result.reason);
      throw new CorruptMessageError(id, `Data of message "${id}" is damaged: ${result.reason}`);
    }
    return result.data;
  }

  /** The first `limit` octets of a message's data, unchecked; undefined when there is no such message. */
  async readHead(id: string, limit: number): Promise<Uint8Array | undefined> {
    this.#requireOpen();
    return await (await this.#reads()).call("readHead", id, limit);
  }

  /**
   * Where a read goes: the read-only connection once it is up, else the writer. A read sees every write
   * issued before it (as when both shared one thread): it waits for the last one's commit — a wait for the
   * writer, never one the writer has to make.
   */
  async #reads(): Promise<SpoolEngine> {
    if (!this.#readerUp) return this.#engine;
    await this.#lastWrite;
    return this.#readerUp ? this.#reader : this.#engine;
  }

  /** The reader found damage: the writer moves the message to `corrupt` (kept, never retried). */
  async #markCorrupt(id: string, reason: string): Promise<void> {
    try {
      const moved = await this.setState(id, "corrupt", { reason });
      if (moved) this.#log(`spool: message "${id}" moved to corrupt: ${reason}`);
    } catch (err) {
      // Found again at the next read; the body is never served either way.
      this.#log(
        `spool: message "${id}" is corrupt (${reason}) but could not be marked: ${errorMessage(err)}`,
      );
    }
  }

  /** Reads one envelope, or undefined when there is no such message. */
  async get(id: string): Promise<Envelope | undefined> {
    this.#requireOpen();
    return await (await this.#reads()).call("get", id);
  }

  /** Lists every queued message, oldest first. */
  async list(): Promise<SpoolEntry[]> {
    this.#requireOpen();
    return (await (await this.#reads()).call("listEnvelopes")).map((envelope) => ({ envelope }));
  }

  /** One page of queue rows. */
  async query(query: QueueQuery = {}): Promise<QueueRow[]> {
    this.#requireOpen();
    return await (await this.#reads()).call("query", query);
  }

  /** One message's queue row. */
  async row(id: string): Promise<QueueRow | undefined> {
    this.#requireOpen();
    return await (await this.#reads()).call("row", id);
  }

  /** A message's history lines. */
  async history(id: string): Promise<{ at: number; text: string }[]> {
    this.#requireOpen();
    return await (await this.#reads()).call("history", id);
  }

  /** Counts by state and by domain. */
  async summary(): Promise<QueueSummary> {
    this.#requireOpen();
    return await (await this.#reads()).call("summary");
  }

  /** The earliest next attempt of an incoming or deferred message. */
  async nextDue(): Promise<number | undefined> {
    this.#requireOpen();
    return await (await this.#reads()).call("nextDue");
  }

  /** Number of queued messages. */
  async count(): Promise<number> {
    this.#requireOpen();
    return await (await this.#reads()).call("count");
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
      if (this.#reader !== this.#engine) await this.#reader.close().catch(() => {});
      await this.#checkpointer?.close().catch(() => {});
      this.#releaseLock();
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
    if (this.#checkpointTimer !== undefined) clearTimeout(this.#checkpointTimer);
    this.#checkpointTimer = undefined;
    await this.#checkpointing;
    this.#checkpointerUp = false;
    // Before the writer, whose close copies the rest of the WAL into spool.db and removes the WAL once no
    // other connection has it open.
    await this.#checkpointer?.close().catch(() => {});
    try {
      if (this.#reader !== this.#engine) {
        await this.#readerOpening;
        this.#readerUp = false;
        await this.#reader.close().catch(() => {});
      }
      await this.#engine.close();
    } finally {
      this.#releaseLock();
    }
  }

  /** Checks an envelope and returns its JSON form (what the spool keeps: no functions, no undefined). */
  #check(envelope: Envelope): Envelope {
    if (typeof envelope?.id !== "string" || envelope.id === "") {
      throw new TypeError("Envelope must have a non-empty string id");
    }
    if (!Array.isArray(envelope.recipients)) throw new TypeError("Envelope must have a recipients array");
    return JSON.parse(JSON.stringify(envelope));
  }

  #requireOpen(): void {
    if (this.#state !== "open" && this.#state !== "closing") throw new Error("Spool is not open");
  }

  /** Why a write cannot be taken now (not open, or opened read-only); undefined when it can. */
  #refusesWrites(): SpoolWriteError | undefined {
    if (this.#state !== "open") return new SpoolWriteError(`Spool is not open (state "${this.#state}")`);
    if (this.#lockless && !this.#memory) return new SpoolWriteError("Spool was opened read-only");
    return undefined;
  }

  #enqueue(op: BatchOp): Promise<unknown> {
    const refused = this.#refusesWrites();
    if (refused) return Promise.reject(refused);
    const written = new Promise<unknown>((resolve, reject) => {
      this.#queue.push({ op, resolve, reject });
      // A delivery outcome is the window in which a crash repeats a delivery: never held back by the batch
      // window (the commit in flight, if any, still comes first).
      this.#schedule(op.kind === "apply");
    });
    this.#lastWrite = written.then(() => {}, () => {});
    return written;
  }

  /** Starts a commit now, after the current task, or after the window; never while one is running. */
  #schedule(urgent = false): void {
    if (this.#inFlight !== undefined || this.#scheduled) return;
    if (urgent || this.#queue.length >= this.#maxBatch) {
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
    const batch = this.#take();
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

  /** Something went into the WAL: a checkpoint is due. */
  #written(): void {
    this.#uncheckpointed = true;
    this.#scheduleCheckpoint();
  }

  /**
   * Starts a checkpoint on the checkpoint thread, at most one every CHECKPOINT_EVERY_MS and only after
   * writes. It copies the WAL into spool.db beside the writer, which then never stops for the copy and for
   * spool.db's fsync (measured: about half of a 10 KiB store's time on the writer's thread).
   */
  #scheduleCheckpoint(): void {
    if (
      !this.#checkpointerUp || this.#checkpointing !== undefined || this.#checkpointTimer !== undefined ||
      !this.#uncheckpointed || this.#state !== "open"
    ) return;
    const wait = this.#lastCheckpoint + CHECKPOINT_EVERY_MS - performance.now();
    if (wait > 0) {
      this.#checkpointTimer = setTimeout(() => {
        this.#checkpointTimer = undefined;
        this.#scheduleCheckpoint();
      }, wait);
      return;
    }
    this.#uncheckpointed = false;
    this.#lastCheckpoint = performance.now();
    this.#checkpointing = this.#checkpoint().finally(() => {
      this.#checkpointing = undefined;
      this.#scheduleCheckpoint();
    });
  }

  async #checkpoint(): Promise<void> {
    try {
      const done = await this.#checkpointer!.call("checkpoint");
      // The WAL starts over from its beginning only when a write begins with all of it copied, which a copy
      // running beside the writes never achieves. Once it is long, the writer copies the rest (what came in
      // during this copy) itself, between two batches, so the WAL stays about RESTART_FRAMES pages long.
      if (done.log >= RESTART_FRAMES && this.#state === "open") await this.#engine.call("checkpoint");
      if (this.#checkpointFailure !== undefined) {
        this.#log(`spool: checkpoints work again (after: ${this.#checkpointFailure})`);
        this.#checkpointFailure = undefined;
      }
    } catch (err) {
      const message = errorMessage(err);
      if (message !== this.#checkpointFailure) this.#log(`spool: checkpoint failed: ${message}`);
      this.#checkpointFailure = message;
    }
  }

  /** The checkpoint thread could not open or be brought back: the writer checkpoints again, as SQLite does. */
  #checkpointerGone(err: Error): void {
    this.#checkpointerUp = false;
    this.#writerOptions.checkpointByCaller = false;
    this.#log(`spool: the checkpoint thread is gone, the writer checkpoints itself: ${errorMessage(err)}`);
    if (this.#state !== "open") return;
    this.#engine.call("checkpointHere").catch((e) =>
      this.#log(`spool: could not give checkpoints back to the writer: ${errorMessage(e)}`)
    );
  }

  /**
   * The next batch, in arrival order, except that delivery outcomes (apply) go before other writes when
   * more than one batch is waiting: a burst of inbound stores must not delay the record of a 250 already
   * received. Reordering is safe: a message's outcome always follows its own store.
   */
  #take(): Queued[] {
    if (this.#queue.length <= this.#maxBatch) return this.#queue.splice(0);
    const batch: Queued[] = [];
    const rest: Queued[] = [];
    for (const q of this.#queue) {
      (q.op.kind === "apply" && batch.length < this.#maxBatch ? batch : rest).push(q);
    }
    const room = this.#maxBatch - batch.length;
    batch.push(...rest.splice(0, room));
    this.#queue = rest;
    return batch;
  }

  async #commit(batch: Queued[]): Promise<void> {
    const started = performance.now();
    let results: OpResult[];
    try {
      results = await this.#engine.call("commit", batch.map((q) => q.op));
    } catch (err) {
      const message = errorMessage(err);
      for (const q of batch) q.reject(new SpoolWriteError(message, { cause: err }));
      return;
    }
    // Committed: each write is answered by its own result, whatever the bookkeeping after it does (an
    // observer that threw here once turned every stored write of the batch into a refusal, and a resend).
    batch.forEach((q, i) => {
      const result = results[i];
      if (result?.ok) q.resolve(result.value);
      else q.reject(new SpoolWriteError(result?.message ?? "Spool commit returned no result"));
    });
    this.#commits++;
    this.#writes += batch.length;
    try {
      this.#onCommit?.((performance.now() - started) / 1000, batch.length);
    } catch (err) {
      this.#log(`spool: commit observer failed: ${errorMessage(err)}`);
    }
    this.#written();
  }
}
