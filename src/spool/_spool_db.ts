/**
 * The synchronous SQLite side of the spool: one `spool.db` (WAL, synchronous=FULL) holding each message's
 * envelope row and data row, batch commits, and start-up recovery into `quarantine/`.
 * Trusts nothing it reads back: every row is checked (JSON shape, id, length, SHA-256) before it is served.
 * Runs in whichever thread owns it (the spool worker, or the main thread); never call it from two at once.
 */

import { DatabaseSync, type StatementSync } from "node:sqlite";
import { createHash } from "node:crypto";
import type { RecoveryReport } from "./spool.ts";
import { MESSAGE_ID_PATTERN } from "./message_id.ts";
import { dirname, resolve } from "node:path";
import { errorMessage } from "../core/error_message.ts";

/** One write in a group commit. */
export type BatchOp =
  | { kind: "store"; id: string; envelopeJson: string; data: Uint8Array; createdAt: number }
  | { kind: "update"; id: string; envelopeJson: string }
  | { kind: "remove"; id: string };

/** What became of one op in a committed batch: done, or refused without writing anything. */
export type OpResult = { ok: true } | { ok: false; message: string };

/** Thrown when a whole batch could not be committed (and was rolled back). */
export class BatchCommitError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BatchCommitError";
  }
}

/** A stored envelope and data row, as read back for serving. */
interface EnvelopeRow {
  id: string;
  envelope: unknown;
  data_length: unknown;
  data_sha256: unknown;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS envelopes (
  id TEXT PRIMARY KEY NOT NULL,
  envelope TEXT NOT NULL,
  data_length INTEGER NOT NULL,
  data_sha256 TEXT NOT NULL,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS data (
  id TEXT PRIMARY KEY NOT NULL,
  bytes BLOB NOT NULL
);
`;

/** SHA-256 of the data, lower-case hex. */
export function sha256Hex(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Whether a SQLite error means the file itself is damaged (as opposed to locked or unreadable). */
function isCorruptionError(err: unknown): boolean {
  const text = errorMessage(err);
  return /not a database|malformed|corrupt|SQLITE_CORRUPT|SQLITE_NOTADB/i.test(text);
}

/** A file name for quarantined things: the id when it is a plain message id, else a hex form of it. */
function quarantineName(id: string): string {
  if (MESSAGE_ID_PATTERN.test(id)) return id;
  const bytes = new TextEncoder().encode(id).slice(0, 48);
  return `bad-${bytes.toHex()}`;
}

/** Writes a file and fsyncs it (quarantine evidence must survive a crash before the row is deleted). */
function writeDurably(path: string, bytes: Uint8Array): void {
  const file = Deno.openSync(path, { write: true, create: true, truncate: true });
  try {
    let offset = 0;
    while (offset < bytes.length) offset += file.writeSync(bytes.subarray(offset));
    file.syncSync();
  } finally {
    file.close();
  }
}

/** Fsyncs a directory so renames and new names in it are durable. */
function syncDir(path: string): void {
  const dir = Deno.openSync(path, { read: true });
  try {
    dir.syncSync();
  } finally {
    dir.close();
  }
}

function existsSync(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** Checks an envelope row and its data; returns why it is bad, or undefined when it is sound. */
function checkRow(id: string, row: EnvelopeRow | undefined, bytes: unknown): string | undefined {
  if (row === undefined) return "data without an envelope row";
  if (typeof row.envelope !== "string") return "envelope is not text";
  let parsed: unknown;
  try {
    parsed = JSON.parse(row.envelope);
  } catch (err) {
    return `envelope is not JSON: ${(err as Error).message}`;
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return "envelope is not an object";
  }
  const env = parsed as Record<string, unknown>;
  if (env.id !== id) return `envelope id "${String(env.id)}" does not match row id "${id}"`;
  if (typeof env.sender !== "string") return "envelope has no sender";
  if (!Array.isArray(env.recipients)) return "envelope has no recipients array";
  if (bytes === undefined) return "envelope without a data row";
  if (!(bytes instanceof Uint8Array)) return "data is not a blob";
  if (row.data_length !== bytes.length) {
    return `data length ${bytes.length} does not match recorded ${String(row.data_length)}`;
  }
  if (row.data_sha256 !== sha256Hex(bytes)) return "data digest does not match recorded SHA-256";
  return undefined;
}

/** Options of {@link SpoolDb}. */
export interface SpoolDbOptions {
  /** Where log lines go (quarantine, replaced database) */
  log?: (line: string) => void;
  /** How long to wait for another process's lock, ms (default 5000) */
  busyTimeoutMs?: number;
}

/** The spool database of one directory. */
export class SpoolDb {
  #dir: string;
  #log: (line: string) => void;
  #busyTimeoutMs: number;
  #db: DatabaseSync | undefined;
  #stmts: Record<string, StatementSync> = {};

  constructor(dir: string, options: SpoolDbOptions = {}) {
    this.#dir = dir.replace(/\/+$/, "") || "/";
    this.#log = options.log ?? (() => {});
    this.#busyTimeoutMs = options.busyTimeoutMs ?? 5000;
  }

  get #quarantineDir(): string {
    return `${this.#dir}/quarantine`;
  }

  /** Opens (creating the directory and file), checks every row and quarantines what is corrupt. */
  open(): RecoveryReport {
    Deno.mkdirSync(this.#dir, { recursive: true });
    Deno.mkdirSync(this.#quarantineDir, { recursive: true });
    const report: RecoveryReport = { recovered: [], quarantined: [] };
    try {
      this.#openDatabase();
    } catch (err) {
      this.#closeQuietly();
      if (!isCorruptionError(err)) throw err;
      report.quarantined.push(this.#quarantineDatabase(err));
      this.#openDatabase();
    }
    // A newly created spool.db (and directory) must survive a crash too: SQLite syncs the WAL, not the
    // directory entries of the database file or of the spool directory itself.
    syncDir(this.#dir);
    syncDir(dirname(resolve(this.#dir)));
    this.#recoverRows(report);
    return report;
  }

  #openDatabase(): void {
    const db = new DatabaseSync(`${this.#dir}/spool.db`);
    this.#db = db;
    db.exec(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(this.#busyTimeoutMs))}`);
    const mode = db.prepare("PRAGMA journal_mode = WAL").get() as { journal_mode?: string } | undefined;
    if (mode?.journal_mode !== "wal") {
      throw new Error(`Cannot switch spool.db to WAL (got "${mode?.journal_mode}")`);
    }
    db.exec("PRAGMA synchronous = FULL");
    const check = db.prepare("PRAGMA quick_check").all() as { quick_check?: string }[];
    const problems = check.map((r) => r.quick_check).filter((v) => v !== "ok");
    if (problems.length > 0) throw new Error(`spool.db is corrupt: ${problems.slice(0, 3).join("; ")}`);
    db.exec(SCHEMA);
    this.#stmts = {
      exists: db.prepare("SELECT 1 AS one FROM envelopes WHERE id = ?"),
      insertEnvelope: db.prepare(
        "INSERT INTO envelopes (id, envelope, data_length, data_sha256, created_at) VALUES (?, ?, ?, ?, ?)",
      ),
      insertData: db.prepare("INSERT OR REPLACE INTO data (id, bytes) VALUES (?, ?)"),
      update: db.prepare("UPDATE envelopes SET envelope = ? WHERE id = ?"),
      removeEnvelope: db.prepare("DELETE FROM envelopes WHERE id = ?"),
      removeData: db.prepare("DELETE FROM data WHERE id = ?"),
      getEnvelope: db.prepare("SELECT envelope FROM envelopes WHERE id = ?"),
      getRow: db.prepare("SELECT id, envelope, data_length, data_sha256 FROM envelopes WHERE id = ?"),
      getData: db.prepare("SELECT bytes FROM data WHERE id = ?"),
      list: db.prepare("SELECT envelope FROM envelopes ORDER BY created_at, id"),
      count: db.prepare("SELECT count(*) AS n FROM envelopes"),
      allIds: db.prepare("SELECT id FROM envelopes UNION SELECT id FROM data"),
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

  #recoverRows(report: RecoveryReport): void {
    const ids = (this.#stmts.allIds.all() as { id: unknown }[]).map((r) => r.id);
    for (const rawId of ids) {
      const id = typeof rawId === "string" ? rawId : String(rawId);
      const row = this.#stmts.getRow.get(id) as EnvelopeRow | undefined;
      const dataRow = this.#stmts.getData.get(id) as { bytes: unknown } | undefined;
      const reason = typeof rawId === "string" ? checkRow(id, row, dataRow?.bytes) : "id is not text";
      if (reason === undefined) {
        report.recovered.push(id);
        continue;
      }
      const path = this.#quarantineRow(id, row?.envelope, dataRow?.bytes, reason);
      report.quarantined.push({ id, reason, path });
    }
  }

  /** Writes what there is of a bad row to quarantine (synced), then deletes it from the database. */
  #quarantineRow(id: string, envelope: unknown, bytes: unknown, reason: string): string {
    let base = `${this.#quarantineDir}/${quarantineName(id)}`;
    if (existsSync(`${base}.reason`)) base = `${base}.${Date.now()}`;
    const enc = new TextEncoder();
    const envelopeBytes = envelope instanceof Uint8Array
      ? envelope
      : enc.encode(envelope === undefined || envelope === null ? "" : String(envelope));
    const dataBytes = bytes instanceof Uint8Array
      ? bytes
      : enc.encode(bytes === undefined || bytes === null ? "" : String(bytes));
    writeDurably(`${base}.envelope`, envelopeBytes);
    writeDurably(`${base}.data`, dataBytes);
    writeDurably(`${base}.reason`, enc.encode(`${reason}\n`));
    syncDir(this.#quarantineDir);
    const db = this.#db!;
    db.exec("BEGIN IMMEDIATE");
    try {
      this.#stmts.removeEnvelope.run(id);
      this.#stmts.removeData.run(id);
      db.exec("COMMIT");
    } catch (err) {
      if (db.isTransaction) db.exec("ROLLBACK");
      throw err;
    }
    this.#log(`spool: quarantined "${id}": ${reason} (files "${base}.*")`);
    return base;
  }

  /**
   * Runs every op in ONE transaction and returns after COMMIT. An op that is refused (duplicate id, unknown
   * id) writes nothing and gets `{ ok: false }`; any SQLite failure rolls the whole batch back and throws
   * {@link BatchCommitError}.
   */
  commit(ops: BatchOp[]): OpResult[] {
    const db = this.#requireDb();
    const s = this.#stmts;
    const results: OpResult[] = [];
    try {
      db.exec("BEGIN IMMEDIATE");
      for (const op of ops) {
        if (op.kind === "store") {
          if (s.exists.get(op.id) !== undefined) {
            results.push({ ok: false, message: `Message "${op.id}" is already in the spool` });
            continue;
          }
          s.insertEnvelope.run(op.id, op.envelopeJson, op.data.length, sha256Hex(op.data), op.createdAt);
          s.insertData.run(op.id, op.data);
        } else if (op.kind === "update") {
          const changed = s.update.run(op.envelopeJson, op.id);
          if (Number(changed.changes) === 0) {
            results.push({ ok: false, message: `No queued message "${op.id}"` });
            continue;
          }
        } else {
          s.removeEnvelope.run(op.id);
          s.removeData.run(op.id);
        }
        results.push({ ok: true });
      }
      db.exec("COMMIT");
      return results;
    } catch (err) {
      try {
        if (db.isTransaction) db.exec("ROLLBACK");
      } catch { /* SQLite already rolled back */ }
      throw new BatchCommitError(`Spool commit failed: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  }

  /** One envelope's JSON, or undefined. */
  getEnvelopeJson(id: string): string | undefined {
    this.#requireDb();
    const row = this.#stmts.getEnvelope.get(id) as { envelope: string } | undefined;
    return row?.envelope;
  }

  /** Every envelope's JSON, oldest first. */
  listEnvelopeJson(): string[] {
    this.#requireDb();
    return (this.#stmts.list.all() as { envelope: string }[]).map((r) => r.envelope);
  }

  /** A message's data, checked against its recorded length and digest; undefined when not queued. */
  readData(id: string): Uint8Array | undefined {
    this.#requireDb();
    const row = this.#stmts.getRow.get(id) as EnvelopeRow | undefined;
    if (row === undefined) return undefined;
    const data = this.#stmts.getData.get(id) as { bytes: unknown } | undefined;
    const bytes = data?.bytes;
    if (
      !(bytes instanceof Uint8Array) || bytes.length !== row.data_length ||
      sha256Hex(bytes) !== row.data_sha256
    ) {
      throw new Error(`Data of message "${id}" is damaged (length or digest mismatch)`);
    }
    return bytes;
  }

  /** Number of queued messages. */
  count(): number {
    this.#requireDb();
    return Number((this.#stmts.count.get() as { n: number | bigint }).n);
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
