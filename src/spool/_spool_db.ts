/**
 * The synchronous SQLite side of the spool: one `spool.db` (WAL, synchronous=FULL) with the version-3
 * schema of _schema.ts, group commits in which one refused or failing write never fails the others (the
 * batch runs again with a savepoint for each write when one fails), and start-up that never reads a body.
 * Bodies are written and read in chunks, so SQLite never holds a second copy of a whole message.
 * Trusts nothing it reads back: data is checked against its recorded length and SHA-256 when read for
 * delivery, and a mismatch moves the message to `corrupt` instead of serving it.
 * Runs in whichever thread owns it (the spool worker, or the main thread); never call it from two at once.
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import { createHash } from "node:crypto";
import type { Envelope } from "../core/envelope.ts";
import type {
  Claimed,
  DeliveryUpdate,
  QueueQuery,
  QueueRow,
  QueueState,
  QueueSummary,
  RecoveryReport,
} from "./spool.ts";
import { dirname, resolve } from "node:path";
import { errorMessage } from "../core/error_message.ts";
import {
  type BadOldRow,
  CHUNK_SIZE,
  envelopeColumn,
  initialState,
  migrateV1,
  recipientFromRow,
  type RecipientRow,
  recipientValues,
  SCHEMA_V3,
  SCHEMA_VERSION,
  schemaVersion,
} from "./_schema.ts";
import { existsSync, quarantineName, syncDir, writeDurably } from "./_files.ts";
import { availableSpace } from "./free_space.ts";

/**
 * Octets kept in `<dir>/space.reserve` while the disk has room. When a commit finds the disk full, the file
 * is deleted so that the writes that free space (delivery outcomes, removals) can still grow the WAL; new
 * messages are refused until there is room to put the reserve back.
 */
export const SPACE_RESERVE = 4 * 1024 * 1024;

/** The reserve file's name inside the spool directory. */
export const RESERVE_FILE = "space.reserve";

/** Whether an error means the file system (or SQLite's view of it) is full. */
function isDiskFull(text: string): boolean {
  return /database or disk is full|SQLITE_FULL|No space left|ENOSPC/i.test(text);
}

/** One write in a group commit. */
export type BatchOp =
  | {
    kind: "store";
    envelope: Envelope;
    data: Uint8Array;
    transfer?: boolean;
    history?: string[];
    now?: number;
  }
  | { kind: "update"; envelope: Envelope }
  | { kind: "apply"; update: DeliveryUpdate; now: number }
  | {
    kind: "setState";
    id: string;
    state: QueueState;
    from?: QueueState[];
    reason?: string;
    nextAttempt?: number;
  }
  | { kind: "retryNow"; domain?: string; at: number }
  | { kind: "remove"; id: string };

/** What became of one op in a committed batch: done (with a value for claims), or refused. */
export type OpResult = { ok: true; value?: unknown } | { ok: false; message: string };

/** Thrown when a whole batch could not be committed (and was rolled back). */
export class BatchCommitError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BatchCommitError";
  }
}

/** An op refused without writing anything (its savepoint was rolled back). */
class RefusedError extends Error {}

/** Runs `fn` in one `BEGIN IMMEDIATE` transaction: committed when it returns, rolled back when it throws. */
function immediate<T>(db: DatabaseSync, fn: () => T): T {
  db.exec("BEGIN IMMEDIATE");
  try {
    const out = fn();
    db.exec("COMMIT");
    return out;
  } catch (err) {
    if (db.isTransaction) db.exec("ROLLBACK");
    throw err;
  }
}

/** SHA-256 of the data, lower-case hex. */
export function sha256Hex(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/**
 * Frees a chunk read back at once (detaching its buffer) instead of leaving it to the garbage collector,
 * which lets up to ~64 MB of such external memory pile up before it runs: a second copy of the message.
 */
function release(bytes: Uint8Array): void {
  const buffer = bytes.buffer;
  if (!(buffer instanceof ArrayBuffer) || buffer.byteLength !== bytes.byteLength) return;
  try {
    buffer.transfer(0);
  } catch { /* not detachable: the collector frees it */ }
}

/** Whether a SQLite error means the file itself is damaged (as opposed to locked or unreadable). */
function isCorruptionError(err: unknown): boolean {
  const text = errorMessage(err);
  return /not a database|malformed|corrupt|SQLITE_CORRUPT|SQLITE_NOTADB/i.test(text);
}

/** Options of {@link SpoolDb}. */
export interface SpoolDbOptions {
  /** Where log lines go (quarantine, replaced database, corrupt message) */
  log?: (line: string) => void;
  /** How long to wait for another process's lock, ms (default 5000) */
  busyTimeoutMs?: number;
  /** Keep the database in memory (tests of other rooms): nothing is written to `dir` */
  memory?: boolean;
  /** Open an existing spool read-only (the queue command while Ferry runs): no migration, no recovery */
  readOnly?: boolean;
  /**
   * With less than this many octets available, removed messages' pages are given back to the file system
   * after each commit (default 0: only while the reserve is given up for a full disk)
   */
  giveBackBelow?: number;
  /**
   * Checkpoints are run by the caller ({@link SpoolDb.checkpoint}, on another connection and on this one),
   * not by SQLite at the end of a commit once the WAL passes 1,000 pages
   */
  checkpointByCaller?: boolean;
  /**
   * A connection that only runs checkpoints (sqlite_spool.ts's checkpointer thread): opens an existing
   * spool.db without converting or recovering anything
   */
  checkpointer?: boolean;
}

/** What a checkpoint found and did ({@link SpoolDb.checkpoint}). */
export interface CheckpointResult {
  /** Another checkpoint was running, or a reader held back part of the WAL */
  busy: boolean;
  /** Frames in the WAL */
  log: number;
  /** Of those, frames now copied into spool.db */
  checkpointed: number;
}

/**
 * Free space (beyond spool.minFree) below which checkpoints go back to the writer: far more than the WAL and
 * the copy of it in spool.db that the checkpoint thread can have at once (a few tens of MB).
 */
export const ROOMY = 256 * 1024 * 1024;

/** SQLite's own automatic checkpoint: at the end of a commit that leaves the WAL this many pages long. */
export const AUTO_CHECKPOINT_PAGES = 1000;

/** Result of {@link SpoolDb.readData}. */
export type ReadResult =
  | { kind: "ok"; data: Uint8Array }
  | { kind: "missing" }
  | { kind: "corrupt"; reason: string };

/** A body read back: whole and checked, or why not. */
type BodyRead = Exclude<ReadResult, { kind: "missing" }>;

interface MessageRow {
  id: string;
  state: string;
  next_attempt: number | null;
  received_at: number;
  sender: string;
  envelope: string;
  delivery: string | null;
  data_length: number;
  data_sha256: string;
  reason: string | null;
}

/** The spool database of one directory. */
export class SpoolDb {
  #dir: string;
  #log: (line: string) => void;
  #busyTimeoutMs: number;
  #memory: boolean;
  #readOnly: boolean;
  #giveBackBelow: number;
  #checkpointByCaller: boolean;
  #checkpointer: boolean;
  /**
   * The writer has left checkpoints to the checkpoint thread (SQLite's own turned off); undefined until
   * #placeCheckpoints first decides, for a writer that may (one that never does keeps SQLite's defaults)
   */
  #elsewhere: boolean | undefined;
  #placedAt = 0;
  #db: DatabaseSync | undefined;
  #stmts: Record<string, StatementSync> = {};
  /** The reserve was given up for a full disk: new messages are refused until it is back */
  #short = false;
  /** A message was removed in the commit being made (space to give back when short) */
  #removed = false;

  constructor(dir: string, options: SpoolDbOptions = {}) {
    this.#dir = dir.replace(/\/+$/, "") || "/";
    this.#log = options.log ?? (() => {});
    this.#busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    this.#memory = options.memory === true;
    this.#readOnly = options.readOnly === true;
    this.#giveBackBelow = Math.max(0, options.giveBackBelow ?? 0);
    this.#checkpointByCaller = options.checkpointByCaller === true;
    this.#elsewhere = this.#checkpointByCaller ? undefined : false;
    this.#checkpointer = options.checkpointer === true;
  }

  get #quarantineDir(): string {
    return `${this.#dir}/quarantine`;
  }

  /** Opens (creating the directory and file), migrates an older schema, resets claims of a previous run. */
  open(): RecoveryReport {
    const report: RecoveryReport = { queued: 0, quarantined: [] };
    if (this.#memory) {
      this.#db = new DatabaseSync(":memory:");
      this.#db.exec(SCHEMA_V3);
      this.#db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
      this.#prepare();
      return report;
    }
    if (this.#checkpointer) {
      // Opened after the writer made and converted the file; a checkpoint syncs the WAL before it copies
      // it, and spool.db after copying all of it.
      this.#db = new DatabaseSync(`${this.#dir}/spool.db`);
      this.#setBusyTimeout(this.#db);
      // FULL, as any writer here: under NORMAL a checkpoint syncs just the same (SQLite's rule), but the
      // level is stated rather than left to the build's default.
      this.#db.exec("PRAGMA synchronous = FULL");
      return report;
    }
    if (this.#readOnly) {
      this.#db = new DatabaseSync(`${this.#dir}/spool.db`, { readOnly: true });
      this.#setBusyTimeout(this.#db);
      const version = schemaVersion(this.#db);
      if (version !== SCHEMA_VERSION) {
        throw new Error(
          `spool.db in "${this.#dir}" has schema version ${version}, this Ferry reads ${SCHEMA_VERSION} ` +
            `(start Ferry once to migrate it)`,
        );
      }
      this.#prepare();
      report.queued = this.count();
      return report;
    }
    Deno.mkdirSync(this.#dir, { recursive: true });
    Deno.mkdirSync(this.#quarantineDir, { recursive: true });
    try {
      this.#openDatabase(report);
    } catch (err) {
      this.#closeQuietly();
      if (!isCorruptionError(err)) throw err;
      report.quarantined.push(this.#quarantineDatabase(err));
      this.#openDatabase(report);
    }
    // A newly created spool.db (and directory) must survive a crash too: SQLite syncs the WAL, not the
    // directory entries of the database file or of the spool directory itself.
    syncDir(this.#dir);
    syncDir(dirname(resolve(this.#dir)));
    this.#restoreReserve();
    this.#placeCheckpoints(true);
    // Claims of a run that ended (crash, kill) go back to the queue they came from.
    this.#db!.exec(
      `UPDATE messages SET state = CASE WHEN EXISTS (SELECT 1 FROM recipients WHERE message_id = messages.id
         AND attempts > 0) THEN 'deferred' ELSE 'incoming' END WHERE state = 'active'`,
    );
    report.queued = this.count();
    return report;
  }

  /** How long this connection waits for another's lock (busyTimeoutMs). */
  #setBusyTimeout(db: DatabaseSync): void {
    db.exec(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(this.#busyTimeoutMs))}`);
  }

  #openDatabase(report: RecoveryReport): void {
    const db = new DatabaseSync(`${this.#dir}/spool.db`);
    this.#db = db;
    this.#setBusyTimeout(db);
    // A new database gives freed pages back to the file system on request (#reclaim): on a full disk the
    // space delivered messages leave must show in statfs, where the free-space guard looks. It can only be
    // set before the first table exists and before WAL mode writes the header (a spool made before schema 3
    // keeps reusing its freed pages instead).
    if (Number((db.prepare("SELECT count(*) AS n FROM sqlite_master").get() as { n: number }).n) === 0) {
      db.exec("PRAGMA auto_vacuum = INCREMENTAL");
    }
    const mode = db.prepare("PRAGMA journal_mode = WAL").get() as { journal_mode?: string } | undefined;
    if (mode?.journal_mode !== "wal") {
      throw new Error(`Cannot switch spool.db to WAL (got "${mode?.journal_mode}")`);
    }
    db.exec("PRAGMA synchronous = FULL");
    // A group commit with a failing write runs again with a savepoint for each; SQLite keeps what a savepoint
    // must undo in a statement journal, a temporary file once it passes 64 KiB: two more pwrite()s per page
    // every store touched. In memory it costs a page-sized copy instead (measured: 250 → 200 µs per 10 KiB
    // store).
    db.exec("PRAGMA temp_store = MEMORY");
    // Reading the schema is enough to tell a database from garbage; PRAGMA quick_check would read every page
    // of the file (~8 s per GB) before Ferry listens. Damage inside a page shows when that page is read.
    db.prepare("SELECT count(*) AS n FROM sqlite_master").get();
    const version = schemaVersion(db);
    if (version > SCHEMA_VERSION) {
      throw new Error(
        `spool.db has schema version ${version}, newer than this Ferry's ${SCHEMA_VERSION}: refusing to touch it`,
      );
    }
    if (version === 1) this.#migrate(db, report);
    else {
      immediate(db, () => {
        db.exec(SCHEMA_V3);
        db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
      });
      if (version === 2) {
        // Bodies already stored stay whole in `data` (read from there); nothing else changes shape.
        const messages = Number((db.prepare("SELECT count(*) AS n FROM messages").get() as { n: number }).n);
        report.migrated = { from: 2, to: SCHEMA_VERSION, messages };
        this.#log(`spool: converted spool.db from schema 2 to ${SCHEMA_VERSION} (${messages} message(s))`);
      }
    }
    this.#prepare();
  }

  #migrate(db: DatabaseSync, report: RecoveryReport): void {
    const bad: BadOldRow[] = [];
    const converted = immediate(db, () => {
      const n = migrateV1(db, (row) => bad.push(row));
      const removeData = db.prepare("DELETE FROM data WHERE id = ?");
      for (const row of bad) {
        const bytes = (db.prepare("SELECT bytes FROM data WHERE id = ?").get(row.id) as { bytes?: unknown })
          ?.bytes;
        const path = this.#quarantineRow(row.id, row.envelope, bytes, row.reason);
        removeData.run(row.id);
        report.quarantined.push({ id: row.id, reason: row.reason, path });
      }
      db.exec(SCHEMA_V3);
      db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
      return n;
    });
    report.migrated = { from: 1, to: SCHEMA_VERSION, messages: converted };
    this.#log(`spool: converted spool.db from schema 1 to ${SCHEMA_VERSION} (${converted} message(s))`);
  }

  #prepare(): void {
    const db = this.#db!;
    const prepare = (sql: string) => db.prepare(sql);
    this.#stmts = {
      exists: prepare("SELECT state FROM messages WHERE id = ?"),
      insertMessage: prepare(
        `INSERT INTO messages (id, state, next_attempt, received_at, sender, envelope, delivery, data_length,
           data_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      insertRecipient: prepare(
        `INSERT OR REPLACE INTO recipients (message_id, idx, address, domain, status, attempts, last_error,
           next_attempt, dsn, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ),
      insertChunk: prepare("INSERT OR REPLACE INTO chunks (id, seq, bytes) VALUES (?, ?, ?)"),
      insertHistory: prepare("INSERT INTO history (message_id, at, text) VALUES (?, ?, ?)"),
      setEnvelope: prepare("UPDATE messages SET envelope = ?, delivery = ? WHERE id = ?"),
      setDelivery: prepare("UPDATE messages SET delivery = ? WHERE id = ?"),
      setRecipient: prepare(
        `UPDATE recipients SET status = ?, attempts = coalesce(?, attempts),
           last_error = CASE WHEN ? THEN ? ELSE last_error END,
           next_attempt = CASE WHEN ? THEN ? ELSE next_attempt END,
           extra = coalesce(?, extra) WHERE message_id = ? AND idx = ?`,
      ),
      recomputeNext: prepare(
        `UPDATE messages SET next_attempt = (SELECT min(coalesce(r.next_attempt, messages.received_at))
           FROM recipients r WHERE r.message_id = messages.id AND r.status = 'pending') WHERE id = ?`,
      ),
      setStateIf: prepare(
        "UPDATE messages SET state = ? WHERE id = ? AND state IN ('active', 'incoming', 'deferred')",
      ),
      setState: prepare("UPDATE messages SET state = ?, reason = ? WHERE id = ?"),
      pendingCount: prepare(
        "SELECT count(*) AS n FROM recipients WHERE message_id = ? AND status = 'pending'",
      ),
      recipientStates: prepare("SELECT idx, status FROM recipients WHERE message_id = ?"),
      retryAll: prepare(
        "UPDATE recipients SET next_attempt = ? WHERE message_id = ? AND status = 'pending'",
      ),
      removeMessage: prepare("DELETE FROM messages WHERE id = ?"),
      removeRecipients: prepare("DELETE FROM recipients WHERE message_id = ?"),
      removeData: prepare("DELETE FROM data WHERE id = ?"),
      removeChunks: prepare("DELETE FROM chunks WHERE id = ?"),
      removeHistory: prepare("DELETE FROM history WHERE message_id = ?"),
      getMessage: prepare("SELECT * FROM messages WHERE id = ?"),
      getRecipients: prepare(
        `SELECT idx, address, status, attempts, last_error, next_attempt, dsn, extra FROM recipients
           WHERE message_id = ? ORDER BY idx`,
      ),
      getData: prepare("SELECT bytes FROM data WHERE id = ?"),
      getChunks: prepare("SELECT seq, bytes FROM chunks WHERE id = ? ORDER BY seq"),
      getHeadChunks: prepare("SELECT seq, bytes FROM chunks WHERE id = ? AND seq < ? ORDER BY seq"),
      getDataHead: prepare("SELECT substr(bytes, 1, ?) AS bytes FROM data WHERE id = ?"),
      getHistory: prepare("SELECT at, text FROM history WHERE message_id = ? ORDER BY at, rowid"),
      listIds: prepare("SELECT id FROM messages ORDER BY received_at, id"),
      count: prepare("SELECT count(*) AS n FROM messages"),
      due: prepare(
        "SELECT * FROM messages WHERE state = ? AND next_attempt <= ? ORDER BY next_attempt LIMIT ?",
      ),
      claimOne: prepare("UPDATE messages SET state = 'active' WHERE id = ? AND state = ?"),
      nextDue: prepare(
        "SELECT next_attempt FROM messages WHERE state = ? AND next_attempt IS NOT NULL ORDER BY next_attempt LIMIT 1",
      ),
      byState: prepare("SELECT state, count(*) AS n FROM messages GROUP BY state"),
      byDomain: prepare(
        `SELECT domain, count(DISTINCT message_id) AS messages, count(*) AS recipients FROM recipients
           WHERE status = 'pending' GROUP BY domain ORDER BY recipients DESC, domain LIMIT 1000`,
      ),
      domainMessages: prepare(
        `SELECT DISTINCT r.message_id FROM recipients r JOIN messages m ON m.id = r.message_id
           WHERE r.domain = ? AND r.status = 'pending' AND m.state IN ('incoming', 'deferred', 'active')`,
      ),
      retryDomainRecipients: prepare(
        `UPDATE recipients SET next_attempt = ? WHERE domain = ? AND status = 'pending' AND message_id IN
           (SELECT id FROM messages WHERE state IN ('incoming', 'deferred', 'active'))`,
      ),
      // A flush of the whole queue rewrites only the recipients of messages in delivery now (whose attempt
      // ends by rewriting their next attempt); the others are pulled forward by their message's next_attempt
      // alone, which a queue run reads as "every pending recipient is due" (see Claimed.nextAttempt).
      retryEverything: prepare(
        `UPDATE recipients SET next_attempt = ? WHERE status = 'pending' AND message_id IN
           (SELECT id FROM messages WHERE state = 'active')`,
      ),
      // Strictly before every pending recipient's own next attempt: how a queue run tells a flushed message.
      pullEverything: prepare(
        `UPDATE messages SET next_attempt = min(next_attempt, ?) - 1 WHERE state IN ('incoming', 'deferred')
           AND next_attempt IS NOT NULL`,
      ),
      markCorrupt: prepare("UPDATE messages SET state = 'corrupt', reason = ? WHERE id = ?"),
    };
  }

  #closeQuietly(): void {
    try {
      this.#db?.close();
    } catch { /* already broken; the file is what matters */ }
    this.#db = undefined;
    this.#stmts = {};
  }

  /** Moves a damaged spool.db (and its -wal/-shm) into quarantine under a timestamped name. */
  #quarantineDatabase(err: unknown): { id: string; reason: string; path: string } {
    const stamp = new Date().toISOString().replace(/[:.]/g, "-");
    const base = `${this.#quarantineDir}/spool.db.${stamp}`;
    const reason = `spool.db unreadable: ${errorMessage(err)}`;
    for (const suffix of ["", "-wal", "-shm"]) {
      const from = `${this.#dir}/spool.db${suffix}`;
      if (existsSync(from)) Deno.renameSync(from, `${base}${suffix}`);
    }
    writeDurably(`${base}.reason`, new TextEncoder().encode(reason + "\n"));
    syncDir(this.#quarantineDir);
    syncDir(this.#dir);
    this.#log(`spool: ${reason}; moved to "${base}", starting with an empty spool`);
    return { id: "spool.db", reason, path: base };
  }

  /** Writes what there is of a bad row to quarantine (synced); the caller deletes it from the database. */
  #quarantineRow(id: string, envelope: unknown, bytes: unknown, reason: string): string {
    let base = `${this.#quarantineDir}/${quarantineName(id)}`;
    if (existsSync(`${base}.reason`)) base = `${base}.${Date.now()}`;
    const enc = new TextEncoder();
    const asBytes = (v: unknown) =>
      v instanceof Uint8Array ? v : enc.encode(v === undefined || v === null ? "" : String(v));
    writeDurably(`${base}.envelope`, asBytes(envelope));
    writeDurably(`${base}.data`, asBytes(bytes));
    writeDurably(`${base}.reason`, enc.encode(`${reason}\n`));
    syncDir(this.#quarantineDir);
    this.#log(`spool: quarantined "${id}": ${reason} (files "${base}.*")`);
    return base;
  }

  /**
   * Runs every op in ONE transaction and returns after COMMIT. An op that is refused or fails (duplicate id,
   * unknown id, a failing write) is rolled back alone and gets `{ ok: false }` (the transaction is run again
   * with a savepoint for each op); only a failing BEGIN or COMMIT, or an error that ends the whole
   * transaction (a full disk), throws {@link BatchCommitError} for the whole batch.
   */
  commit(ops: BatchOp[]): OpResult[] {
    this.#requireDb();
    if (this.#short) this.#restoreReserve();
    this.#placeCheckpoints();
    this.#removed = false;
    // On a full disk the second attempt runs short (#short is then set): no new messages, so deliveries are
    // still recorded (and their messages removed).
    const results = this.#withReserve(() => this.#commitOnce(ops, this.#short));
    // Single writes that failed for lack of space (inside their savepoints) get the same second chance.
    const again = ops.map((op, i) => ({ op, i })).filter(({ op, i }) => {
      const r = results[i];
      return !r.ok && op.kind !== "store" && isDiskFull(r.message);
    });
    const full = again.length > 0 ? (results[again[0].i] as { message: string }).message : undefined;
    if (full !== undefined && this.#makeRoom(full)) {
      const second = this.#commitOnce(again.map((a) => a.op), true);
      again.forEach((a, k) => (results[a.i] = second[k]));
    }
    if (this.#removed && this.#shouldGiveBack()) this.#reclaim();
    return results;
  }

  /** Whether space freed by removals should go back to the file system now (short, or below the mark). */
  #shouldGiveBack(): boolean {
    if (this.#memory || this.#readOnly) return false;
    if (this.#short) return true;
    if (this.#giveBackBelow === 0) return false;
    try {
      // Twice the reserve: it is restored once there is room for it and as much again, and pages freed after that
      // would otherwise stay in spool.db while the disk is still nearly full.
      return availableSpace(this.#dir) < this.#giveBackBelow + 2 * SPACE_RESERVE;
    } catch {
      return false;
    }
  }

  /**
   * When `error` (a message) is a full disk: gives up the reserve the first time; after that, with
   * checkpoints on another thread, empties the WAL. Whether either happened, so that another attempt may fit.
   */
  #makeRoom(error: string): boolean {
    if (this.#memory || this.#readOnly || !isDiskFull(error)) return false;
    if (!this.#short) {
      // The reserve first: emptying the WAL copies what is left of it into spool.db, which can take the room
      // a commit needs.
      this.#releaseReserve(error);
      return true;
    }
    return this.#checkpointByCaller && this.#emptyWal();
  }

  /** Runs `attempt`; when it fails on a full disk, makes room ({@link #makeRoom}) and runs it again. */
  #withReserve<T>(attempt: () => T): T {
    try {
      return attempt();
    } catch (err) {
      if (!this.#makeRoom(errorMessage(err))) throw err;
      return attempt();
    }
  }

  /**
   * With checkpoints on another thread the WAL runs up to RESTART_FRAMES pages (sqlite_spool.ts) before it
   * starts over, most of them already copied into spool.db: on a full disk that is space the next commits
   * need. Copies the rest and truncates the WAL to nothing (waiting, as busy_timeout allows, for a checkpoint
   * or a read in progress); the writes after it grow the WAL again from its start. Whether it was emptied.
   */
  #emptyWal(): boolean {
    try {
      if (this.#truncateWal()) return true;
      this.#log("spool: disk full and the WAL could not be emptied: a checkpoint or a read kept it busy");
    } catch (err) {
      this.#log(`spool: disk full and the WAL could not be emptied: ${errorMessage(err)}`);
    }
    return false;
  }

  /**
   * Copies the whole WAL into spool.db and truncates it to nothing; whether that happened. A checkpoint
   * running on the checkpoint thread makes this one return busy at once (SQLite does not wait for it), so it
   * is asked again for up to about a second (those checkpoints are short), unless not `patient`; a reader
   * is waited for as busy_timeout allows.
   */
  #truncateWal(patient = true): boolean {
    const tries = patient && this.#checkpointByCaller ? 50 : 1;
    const pause = tries > 1 ? new Int32Array(new SharedArrayBuffer(4)) : undefined;
    for (let i = 0; i < tries; i++) {
      const row = this.#db!.prepare("PRAGMA wal_checkpoint(TRUNCATE)").get() as { busy: number };
      if (Number(row.busy) === 0) return true;
      if (pause && i + 1 < tries) Atomics.wait(pause, 0, 0, 20);
    }
    return false;
  }

  /**
   * Enters or leaves the short state (reserve given up, new messages refused). While short, checkpoints are
   * the writer's again ({@link #placeCheckpoints}).
   */
  #setShort(short: boolean): void {
    const changed = short !== this.#short;
    this.#short = short;
    if (changed) this.#placeCheckpoints(true);
  }

  /**
   * Whether checkpoints belong on the checkpoint thread now: the reserve is in place and the file system has
   * ROOMY octets free beyond spool.minFree. Below that the WAL (up to RESTART_FRAMES pages, with a copy of it
   * in spool.db behind a checkpoint that lags) must not compete for space with the mail, and the writer
   * checkpoints as SQLite does on its own, every 1,000 pages. Asked by both threads.
   */
  #roomForCheckpointsElsewhere(): boolean {
    if (!this.#reserveInPlace()) return false;
    try {
      return availableSpace(this.#dir) >= this.#giveBackBelow + ROOMY;
    } catch {
      return false;
    }
  }

  /**
   * The writer's side of {@link #roomForCheckpointsElsewhere}, looked at most every 100 ms (or at once with
   * `now`; the checkpoint thread looks before each checkpoint): SQLite's automatic checkpoint off while the
   * checkpoint thread has them, on otherwise.
   */
  #placeCheckpoints(now = false): void {
    if (this.#db === undefined) return;
    const t = performance.now();
    if (!now && t - this.#placedAt < 100) return;
    this.#placedAt = t;
    const elsewhere = this.#checkpointByCaller && !this.#short && this.#roomForCheckpointsElsewhere();
    if (elsewhere === this.#elsewhere) return;
    this.#db.exec(`PRAGMA wal_autocheckpoint = ${elsewhere ? 0 : AUTO_CHECKPOINT_PAGES}`);
    // The WAL a restart leaves behind: kept whole while there is room, cut to the reserve's size when not.
    this.#db.exec(`PRAGMA journal_size_limit = ${elsewhere ? -1 : SPACE_RESERVE}`);
    this.#elsewhere = elsewhere;
  }

  /** Deletes the reserve file (space for the WAL to grow into) and refuses new messages from now on. */
  #releaseReserve(reason: string): void {
    this.#setShort(true);
    try {
      Deno.removeSync(`${this.#dir}/${RESERVE_FILE}`);
      this.#log(
        `spool: disk full (${reason}); released the ${SPACE_RESERVE} octet reserve: deliveries are recorded, ` +
          `new messages refused until there is room again`,
      );
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        this.#log(`spool: disk full and the reserve could not be removed: ${errorMessage(err)}`);
      }
    }
  }

  /** Whether the reserve file is there, whole. */
  #reserveInPlace(): boolean {
    try {
      return Deno.statSync(`${this.#dir}/${RESERVE_FILE}`).size >= SPACE_RESERVE;
    } catch {
      return false;
    }
  }

  /**
   * (Re)creates the reserve file when the file system has room for it and as much again; until then the
   * spool stays short (new messages refused). A spool in memory or read-only has none.
   */
  #restoreReserve(): void {
    if (this.#memory || this.#readOnly) return;
    const path = `${this.#dir}/${RESERVE_FILE}`;
    if (this.#reserveInPlace()) {
      this.#setShort(false);
      return;
    }
    const wasShort = this.#short;
    try {
      if (availableSpace(this.#dir) < 2 * SPACE_RESERVE) {
        this.#setShort(true);
        return;
      }
      // Written, not truncated to size (a sparse file would keep no space at all); not synced: the blocks are
      // taken when written, and after a crash the file is simply made again.
      Deno.writeFileSync(path, new Uint8Array(SPACE_RESERVE));
      this.#setShort(false);
      if (wasShort) this.#log("spool: space is back; the reserve is restored and new messages are accepted");
    } catch (err) {
      try {
        Deno.removeSync(path);
      } catch { /* nothing was written */ }
      if (!wasShort) this.#log(`spool: cannot write the space reserve: ${errorMessage(err)}`);
      // No room: stay short. Another reason (a file-size limit, say) leaves the spool without a reserve.
      this.#setShort(isDiskFull(errorMessage(err)));
    }
  }

  /**
   * On a short disk, after messages were removed: gives their pages back to the file system (incremental
   * vacuum, a step at a time so the WAL stays small) and empties the WAL, so statfs — and the free-space
   * guard at MAIL — sees the space; then puts the reserve back when there is room.
   */
  #reclaim(): void {
    const db = this.#db!;
    try {
      // A vacuum step writes to the WAL too: on a full disk it gets the same room as a commit.
      this.#withReserve(() => this.#vacuum(db));
    } catch (err) {
      this.#log(`spool: could not give space back after removals: ${errorMessage(err)}`);
    }
    this.#restoreReserve();
  }

  /** Gives free pages of spool.db back to the file system, 1 MiB at a time, and empties the WAL. */
  #vacuum(db: DatabaseSync): void {
    const autoVacuum = Number(
      (db.prepare("PRAGMA auto_vacuum").get() as { auto_vacuum: number }).auto_vacuum,
    );
    for (let step = 0; step < 1000 && autoVacuum === 2; step++) {
      const free = Number(
        (db.prepare("PRAGMA freelist_count").get() as { freelist_count: number }).freelist_count,
      );
      if (free === 0) break;
      db.prepare(`PRAGMA incremental_vacuum(${Math.min(free, 256)})`).all();
      // One try per step, as before the checkpoint thread: a busy one is caught up by the last.
      this.#truncateWal(false);
    }
    this.#truncateWal();
  }

  /** One transaction of `ops` (see {@link commit}); with `refuseStores`, new messages are refused. */
  #commitOnce(ops: BatchOp[], refuseStores: boolean): OpResult[] {
    const db = this.#requireDb();
    // Delivery outcomes alone are not synced (NORMAL: a checkpoint still is). They are in the WAL when COMMIT
    // returns, so a killed process keeps them; a power cut can take back the last ones, which means delivering
    // again, never losing (a failure report commits with its recipient's state). The next synced commit
    // makes them durable with itself. A delivery run then costs the disk no sync per outcome batch (what a
    // kill -9 repeats is unchanged: bench:duplicates measured the same before and after).
    const unsynced = !this.#memory && ops.length > 0 && ops.every((op) => op.kind === "apply");
    try {
      // Each commit sets its own safety level, so the NORMAL of a claim or of an outcome commit before it can
      // never carry a store; and a transaction left open by a failed rollback is ended first (SQLite refuses
      // to change the level inside one).
      if (db.isTransaction) db.exec("ROLLBACK");
      db.exec(unsynced ? "PRAGMA synchronous = NORMAL" : "PRAGMA synchronous = FULL");
      // First without a savepoint for each write (one costs a copy of each page the write touches, ~10 % of a
      // store): writes seldom fail, and when one does, the transaction is run again with them.
      const results = this.#runOps(db, ops, refuseStores, false) ??
        this.#runOps(db, ops, refuseStores, true)!;
      db.exec("COMMIT");
      return results;
    } catch (err) {
      try {
        if (db.isTransaction) db.exec("ROLLBACK");
      } catch { /* SQLite already rolled back */ }
      throw new BatchCommitError(`Spool commit failed: ${errorMessage(err)}`, { cause: err });
    }
  }

  /**
   * Runs `ops` in a new transaction, left open for the caller's COMMIT. With `savepoints`, each write has its
   * own and a failing one is rolled back alone (its result says why); without, the first failure rolls back
   * the whole transaction and the answer is undefined.
   */
  #runOps(
    db: DatabaseSync,
    ops: BatchOp[],
    refuseStores: boolean,
    savepoints: boolean,
  ): OpResult[] | undefined {
    db.exec("BEGIN IMMEDIATE");
    const results: OpResult[] = [];
    for (const op of ops) {
      if (refuseStores && op.kind === "store") {
        results.push({ ok: false, message: "Spool is short of space (disk full): new messages refused" });
        continue;
      }
      if (savepoints) db.exec("SAVEPOINT op");
      try {
        const value = this.#run(op);
        if (savepoints) db.exec("RELEASE op");
        results.push(value === undefined ? { ok: true } : { ok: true, value });
      } catch (err) {
        // A full disk or an I/O error can end the whole transaction, not just the statement: that is the
        // commit's failure (the caller gives up the space reserve for a full disk and tries again).
        if (!db.isTransaction) throw err;
        if (!savepoints) {
          db.exec("ROLLBACK");
          return undefined;
        }
        db.exec("ROLLBACK TO op");
        db.exec("RELEASE op");
        results.push({ ok: false, message: errorMessage(err) });
      }
    }
    return results;
  }

  #run(op: BatchOp): unknown {
    const s = this.#stmts;
    switch (op.kind) {
      case "store":
        this.#insert(op.envelope, op.data);
        for (const line of op.history ?? []) {
          this.#stmts.insertHistory.run(op.envelope.id, op.now ?? Date.now(), line);
        }
        return;
      case "update": {
        const env = op.envelope;
        const changed = s.setEnvelope.run(
          envelopeColumn(env),
          env.delivery !== undefined ? JSON.stringify(env.delivery) : null,
          env.id,
        );
        if (Number(changed.changes) === 0) throw new RefusedError(`No queued message "${env.id}"`);
        s.removeRecipients.run(env.id);
        env.recipients.forEach((r, i) => s.insertRecipient.run(env.id, i, ...recipientValues(r)));
        s.recomputeNext.run(env.id);
        return;
      }
      case "apply":
        this.#apply(op.update, op.now);
        return;
      case "setState":
        return this.#setState(op);
      case "retryNow": {
        if (op.domain === undefined) {
          s.retryEverything.run(op.at);
          return Number(s.pullEverything.run(op.at).changes);
        }
        const ids = (s.domainMessages.all(op.domain) as { message_id: string }[]).map((r) => r.message_id);
        s.retryDomainRecipients.run(op.at, op.domain);
        for (const id of ids) s.recomputeNext.run(id);
        return ids.length;
      }
      case "remove":
        this.#remove(op.id);
        return;
    }
  }

  #insert(env: Envelope, data: Uint8Array): void {
    const s = this.#stmts;
    if (s.exists.get(env.id) !== undefined) {
      throw new RefusedError(`Message "${env.id}" is already in the spool`);
    }
    const { state, nextAttempt } = initialState(env);
    s.insertMessage.run(
      env.id,
      state,
      nextAttempt,
      env.receivedAt,
      env.sender,
      envelopeColumn(env),
      env.delivery !== undefined ? JSON.stringify(env.delivery) : null,
      data.length,
      sha256Hex(data),
    );
    env.recipients.forEach((r, i) => s.insertRecipient.run(env.id, i, ...recipientValues(r)));
    // In chunks: SQLite copies what it binds and builds a record around it, so one whole-body blob would
    // cost two more copies of the message; a chunk costs two copies of CHUNK_SIZE.
    let seq = 0;
    for (let off = 0; off < data.length || seq === 0; off += CHUNK_SIZE) {
      s.insertChunk.run(env.id, seq++, data.subarray(off, Math.min(off + CHUNK_SIZE, data.length)));
    }
    if (state === "hold") s.setState.run("hold", `quarantined: ${env.hold}`, env.id);
  }

  #apply(u: DeliveryUpdate, now: number): void {
    const s = this.#stmts;
    if (s.exists.get(u.id) === undefined) throw new RefusedError(`No queued message "${u.id}"`);
    if (u.state === "done" && this.#finishes(u)) {
      // The last pending recipients are done: the message goes, so its rows are not rewritten first.
      for (const report of u.reports ?? []) this.#insert(report.envelope, report.data);
      this.#remove(u.id);
      return;
    }
    for (const r of u.recipients ?? []) {
      const changed = s.setRecipient.run(
        r.status,
        r.attempts ?? null,
        r.lastError !== undefined ? 1 : 0,
        r.lastError ?? null,
        r.nextAttempt !== undefined ? 1 : 0,
        r.nextAttempt ?? null,
        r.extra !== undefined ? JSON.stringify(r.extra) : null,
        u.id,
        r.index,
      );
      if (Number(changed.changes) === 0) {
        throw new RefusedError(`Message "${u.id}" has no recipient ${r.index}`);
      }
    }
    if (u.delivery !== undefined) s.setDelivery.run(JSON.stringify(u.delivery), u.id);
    for (const report of u.reports ?? []) this.#insert(report.envelope, report.data);
    for (const line of u.history ?? []) s.insertHistory.run(u.id, now, line);
    s.recomputeNext.run(u.id);
    if (u.state === "done") {
      const pending = Number((s.pendingCount.get(u.id) as { n: number }).n);
      if (pending === 0) this.#remove(u.id);
      else s.setStateIf.run("deferred", u.id);
    } else if (u.state !== undefined) {
      s.setStateIf.run(u.state, u.id);
    }
  }

  /** Whether `u` leaves no recipient of its message pending (and names only recipients it has). */
  #finishes(u: DeliveryUpdate): boolean {
    const changes = u.recipients ?? [];
    if (changes.some((r) => r.status === "pending")) return false;
    const named = new Set(changes.map((r) => r.index));
    let found = 0;
    for (const row of this.#stmts.recipientStates.all(u.id) as { idx: number; status: string }[]) {
      if (named.has(Number(row.idx))) found++;
      else if (row.status === "pending") return false;
    }
    return found === named.size;
  }

  /**
   * Claims due messages (incoming first, earliest due first) in a transaction of its own, and reads what
   * their deliveries need while the rows are at hand: the envelope, and the data of messages no larger than
   * `dataUpTo` — one round trip to the spool per batch instead of two more per message.
   * Committed without a sync: a claim is no promise to anyone, and one lost in a crash is what the recovery
   * at start undoes anyway (active → incoming/deferred); the next synced commit makes it durable with itself.
   * So a claim never waits for an fsync, only for the group commit in progress.
   */
  claim(now: number, limit: number, dataUpTo = 0): Claimed[] {
    // A full disk must not stop deliveries, which are what frees it.
    return this.#withReserve(() => this.#claimOnce(now, limit, dataUpTo));
  }

  #claimOnce(now: number, limit: number, dataUpTo: number): Claimed[] {
    const db = this.#requireDb();
    if (this.#readOnly) throw new Error("Spool was opened read-only");
    // NORMAL, not OFF: the commit itself is not synced, but a checkpoint it runs still syncs the WAL before
    // copying it and spool.db after, before the WAL is written over (under OFF neither: a power cut could then
    // lose messages acknowledged long before).
    if (db.isTransaction) db.exec("ROLLBACK");
    db.exec("PRAGMA synchronous = NORMAL");
    // Left at NORMAL afterwards: every commit sets its own level (#commitOnce).
    return immediate(db, () => this.#claim(now, limit, dataUpTo));
  }

  #claim(now: number, limit: number, dataUpTo: number): Claimed[] {
    const s = this.#stmts;
    const out: Claimed[] = [];
    for (const from of ["incoming", "deferred"] as const) {
      if (out.length >= limit) break;
      const rows = s.due.all(from, now, limit - out.length) as unknown as MessageRow[];
      for (const row of rows) {
        s.claimOne.run(row.id, from);
        const claimed: Claimed = { id: row.id, from, nextAttempt: Number(row.next_attempt) };
        claimed.envelope = this.#envelope(row);
        if (Number(row.data_length) <= dataUpTo) {
          const read = this.#readDataOf(row);
          if (read.kind === "ok") claimed.data = read.data;
          else if (read.kind === "corrupt") claimed.corrupt = read.reason;
        }
        out.push(claimed);
      }
    }
    return out;
  }

  #setState(op: Extract<BatchOp, { kind: "setState" }>): boolean {
    const s = this.#stmts;
    const row = s.exists.get(op.id) as { state: QueueState } | undefined;
    if (row === undefined) return false;
    if (op.from !== undefined && !op.from.includes(row.state)) return false;
    if (op.nextAttempt !== undefined) {
      s.retryAll.run(op.nextAttempt, op.id);
      s.recomputeNext.run(op.id);
    }
    s.setState.run(op.state, op.reason ?? null, op.id);
    return true;
  }

  #remove(id: string): void {
    const s = this.#stmts;
    this.#removed = true;
    s.removeMessage.run(id);
    s.removeRecipients.run(id);
    s.removeData.run(id);
    s.removeChunks.run(id);
    s.removeHistory.run(id);
  }

  /** One envelope with its recipients' states, or undefined. */
  get(id: string): Envelope | undefined {
    this.#requireDb();
    const row = this.#stmts.getMessage.get(id) as MessageRow | undefined;
    return row === undefined ? undefined : this.#envelope(row);
  }

  #envelope(row: MessageRow): Envelope {
    const env = JSON.parse(row.envelope) as Envelope;
    env.recipients = (this.#stmts.getRecipients.all(row.id) as unknown as RecipientRow[]).map(
      recipientFromRow,
    );
    if (row.delivery !== null) env.delivery = JSON.parse(row.delivery);
    return env;
  }

  /** Every envelope, oldest first (streamed from the database, parsed one at a time). */
  listEnvelopes(): Envelope[] {
    this.#requireDb();
    const out: Envelope[] = [];
    for (const { id } of this.#stmts.listIds.iterate() as Iterable<{ id: string }>) {
      const env = this.get(id);
      if (env !== undefined) out.push(env);
    }
    return out;
  }

  /**
   * A message's data, checked against its recorded length and digest. A mismatch marks the message
   * `corrupt` (with a log line) and is returned as such, never served.
   */
  readData(id: string): ReadResult {
    this.#requireDb();
    const row = this.#stmts.getMessage.get(id) as MessageRow | undefined;
    if (row === undefined) return { kind: "missing" };
    return this.#readDataOf(row);
  }

  /** The data of the message in `row`, checked against its digest (see {@link readData}). */
  #readDataOf(row: MessageRow): ReadResult {
    const id = row.id;
    const read = this.#readChunks(id, Number(row.data_length), row.data_sha256) ??
      this.#readWhole(id, Number(row.data_length), row.data_sha256);
    if (read.kind === "ok") return read;
    const reason = read.reason;
    if (!this.#readOnly) {
      this.#stmts.markCorrupt.run(reason, id);
      this.#log(`spool: message "${id}" moved to corrupt: ${reason}`);
    }
    return { kind: "corrupt", reason };
  }

  /**
   * A chunked body (schema 3), copied chunk by chunk into one buffer of the recorded length and hashed as it
   * goes; undefined when the message has no chunks (a body stored before schema 3).
   */
  #readChunks(id: string, length: number, sha256: string): BodyRead | undefined {
    let out: Uint8Array | undefined;
    const hash = createHash("sha256");
    let off = 0;
    let expected = 0;
    for (const chunk of this.#stmts.getChunks.iterate(id) as Iterable<{ seq: number; bytes: unknown }>) {
      out ??= new Uint8Array(length);
      const bytes = chunk.bytes;
      if (Number(chunk.seq) !== expected++) {
        return { kind: "corrupt", reason: `data chunk ${expected - 1} is missing` };
      }
      if (!(bytes instanceof Uint8Array)) {
        return { kind: "corrupt", reason: `data chunk ${chunk.seq} is not a blob` };
      }
      if (off + bytes.length > length) {
        return { kind: "corrupt", reason: `data is longer than the recorded length ${length}` };
      }
      out.set(bytes, off);
      off += bytes.length;
      hash.update(bytes);
      release(bytes);
    }
    if (out === undefined) return undefined;
    if (off !== length) {
      return { kind: "corrupt", reason: `data length ${off} does not match recorded ${length}` };
    }
    if (hash.digest("hex") !== sha256) {
      return { kind: "corrupt", reason: "data digest does not match recorded SHA-256" };
    }
    return { kind: "ok", data: out };
  }

  /** A body stored whole (schema 2 and older), checked against its recorded length and digest. */
  #readWhole(id: string, length: number, sha256: string): BodyRead {
    const bytes = (this.#stmts.getData.get(id) as { bytes: unknown } | undefined)?.bytes;
    let reason: string | undefined;
    if (!(bytes instanceof Uint8Array)) reason = "data row is missing";
    else if (bytes.length !== length) {
      reason = `data length ${bytes.length} does not match recorded ${length}`;
    } else if (sha256Hex(bytes) !== sha256) reason = "data digest does not match recorded SHA-256";
    return reason === undefined ? { kind: "ok", data: bytes as Uint8Array } : { kind: "corrupt", reason };
  }

  /**
   * The first `limit` octets of a message's data (fewer when it is shorter), reading only the chunks that
   * hold them; not checked against the digest (that needs the whole body). Undefined when there is no
   * such message.
   */
  readHead(id: string, limit: number): Uint8Array | undefined {
    this.#requireDb();
    const row = this.#stmts.getMessage.get(id) as MessageRow | undefined;
    if (row === undefined) return undefined;
    const want = Math.max(0, Math.min(limit, Number(row.data_length)));
    const chunks = this.#stmts.getHeadChunks.all(id, Math.ceil(want / CHUNK_SIZE)) as {
      seq: number;
      bytes: unknown;
    }[];
    if (chunks.length === 0) {
      const bytes = (this.#stmts.getDataHead.get(want, id) as { bytes: unknown } | undefined)?.bytes;
      return bytes instanceof Uint8Array ? bytes : new Uint8Array(0);
    }
    const out = new Uint8Array(want);
    let off = 0;
    for (const c of chunks) {
      if (!(c.bytes instanceof Uint8Array) || off >= want) break;
      const part = c.bytes.subarray(0, want - off);
      out.set(part, off);
      off += part.length;
    }
    return out.subarray(0, off);
  }

  /** One page of queue rows. */
  query(q: QueueQuery): QueueRow[] {
    const db = this.#requireDb();
    const where: string[] = [];
    const args: (string | number)[] = [];
    const add = (clause: string, value: string | number) => {
      where.push(clause);
      args.push(value);
    };
    if (q.state !== undefined) add("m.state = ?", q.state);
    if (q.sender !== undefined) add("m.sender = ? COLLATE NOCASE", q.sender);
    if (q.recipient !== undefined) {
      add(
        "EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.address = ? COLLATE NOCASE)",
        q.recipient,
      );
    }
    if (q.domain !== undefined) {
      add(
        "EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND r.domain = ?)",
        q.domain.toLowerCase().replace(/\.$/, ""),
      );
    }
    if (q.receivedBefore !== undefined) add("m.received_at <= ?", q.receivedBefore);
    if (q.receivedAfter !== undefined) add("m.received_at >= ?", q.receivedAfter);
    if (q.after !== undefined) add("m.id > ?", q.after);
    const limit = Math.max(1, Math.min(10_000, Math.floor(q.limit ?? 100)));
    const sql = `${ROW_SELECT} ${
      where.length ? `WHERE ${where.join(" AND ")}` : ""
    } ORDER BY m.id LIMIT ${limit}`;
    return (db.prepare(sql).all(...args) as Record<string, unknown>[]).map(queueRow);
  }

  /** One message's queue row. */
  row(id: string): QueueRow | undefined {
    const db = this.#requireDb();
    const found = db.prepare(`${ROW_SELECT} WHERE m.id = ?`).get(id) as Record<string, unknown> | undefined;
    return found === undefined ? undefined : queueRow(found);
  }

  /** A message's history lines. */
  history(id: string): { at: number; text: string }[] {
    this.#requireDb();
    return (this.#stmts.getHistory.all(id) as { at: number; text: string }[]).map((r) => ({
      at: Number(r.at),
      text: String(r.text),
    }));
  }

  /** Counts by state and by domain of pending recipients. */
  summary(): QueueSummary {
    this.#requireDb();
    const byState = { incoming: 0, active: 0, deferred: 0, hold: 0, corrupt: 0 } as Record<
      QueueState,
      number
    >;
    for (const r of this.#stmts.byState.all() as { state: QueueState; n: number }[]) {
      byState[r.state] = Number(r.n);
    }
    const byDomain =
      (this.#stmts.byDomain.all() as { domain: string; messages: number; recipients: number }[])
        .map((r) => ({ domain: r.domain, messages: Number(r.messages), recipients: Number(r.recipients) }));
    return { byState, byDomain };
  }

  /** The earliest next attempt of an incoming or deferred message. */
  nextDue(): number | undefined {
    this.#requireDb();
    let min: number | undefined;
    for (const state of ["incoming", "deferred"]) {
      const row = this.#stmts.nextDue.get(state) as { next_attempt: number } | undefined;
      if (row !== undefined) min = Math.min(min ?? Infinity, Number(row.next_attempt));
    }
    return min;
  }

  /** Number of queued messages. */
  count(): number {
    this.#requireDb();
    return Number((this.#stmts.count.get() as { n: number | bigint }).n);
  }

  /**
   * Copies what it can of the WAL into spool.db without waiting for anyone (PASSIVE), syncing both. Run by
   * the writer's own connection when nothing else checkpoints, it copies the whole WAL, so the next write
   * starts the WAL over from its beginning.
   */
  checkpoint(): CheckpointResult {
    // The checkpoint thread stands aside while space is short (#roomForCheckpointsElsewhere): the writer then
    // checkpoints itself.
    if (this.#checkpointer && !this.#roomForCheckpointsElsewhere()) {
      return { busy: true, log: 0, checkpointed: 0 };
    }
    const row = this.#requireDb().prepare("PRAGMA wal_checkpoint(PASSIVE)").get() as Record<string, unknown>;
    return { busy: Number(row.busy) !== 0, log: Number(row.log), checkpointed: Number(row.checkpointed) };
  }

  /**
   * The checkpoint thread is gone for good: from now on this connection checkpoints, as SQLite does on its
   * own, whatever the free space (#placeCheckpoints no longer hands them out).
   */
  checkpointHere(): void {
    this.#checkpointByCaller = false;
    this.#placeCheckpoints(true);
  }

  /** Closes the database (a checkpoint happens on close). */
  close(): void {
    if (this.#db === undefined) return;
    this.#db.close();
    this.#db = undefined;
    this.#stmts = {};
  }

  #requireDb(): DatabaseSync {
    if (this.#db === undefined) throw new Error("Spool is not open");
    return this.#db;
  }
}

const ROW_SELECT = `SELECT m.id, m.state, m.next_attempt, m.received_at, m.sender, m.data_length, m.reason,
    (SELECT count(*) FROM recipients r WHERE r.message_id = m.id) AS recipients,
    (SELECT count(*) FROM recipients r WHERE r.message_id = m.id AND r.status = 'pending') AS pending
  FROM messages m`;

function queueRow(r: Record<string, unknown>): QueueRow {
  const row: QueueRow = {
    id: String(r.id),
    state: r.state as QueueState,
    receivedAt: Number(r.received_at),
    sender: String(r.sender),
    size: Number(r.data_length),
    pending: Number(r.pending),
    recipients: Number(r.recipients),
  };
  if (r.next_attempt !== null && row.pending > 0) row.nextAttempt = Number(r.next_attempt);
  if (r.reason !== null) row.reason = String(r.reason);
  return row;
}
