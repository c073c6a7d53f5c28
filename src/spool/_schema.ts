/**
 * The spool database's schema (version 3) and the migrations from version 1, the single `envelopes` table
 * of JSON blobs that Ferry used before queue states became columns, and from version 2.
 * Version 2: `messages` (one row a message: queue state, next attempt, envelope without recipients),
 * `recipients` (one row a recipient: status, attempts, last error, next attempt, DSN parameters), `data`
 * (the body as one blob, untouched by state changes) and `history` (lines for `queue show`).
 * Version 3 adds `chunks`: new bodies are stored in pieces of {@link CHUNK_SIZE} octets, keyed by
 * (id, seq), so neither storing nor reading a body makes SQLite hold a copy of all of it. Bodies written
 * before (in `data`) stay where they are and are read from there; version 2 → 3 only adds the table.
 * The migrations stream the old rows (bounded memory) and never read a body: digests move over as they were.
 */

import type { DatabaseSync } from "node:sqlite";
import type { Envelope, Recipient } from "../core/envelope.ts";

/** The schema version this code writes (`PRAGMA user_version`). */
export const SCHEMA_VERSION = 3;

/** Octets per row of `chunks` (the last row of a body holds the rest). */
export const CHUNK_SIZE = 256 * 1024;

/** Tables and indexes of version 2. */
export const SCHEMA_V2 = `
CREATE TABLE IF NOT EXISTS messages (
  id TEXT PRIMARY KEY NOT NULL,
  state TEXT NOT NULL,
  next_attempt INTEGER,
  received_at INTEGER NOT NULL,
  sender TEXT NOT NULL,
  envelope TEXT NOT NULL,
  delivery TEXT,
  data_length INTEGER NOT NULL,
  data_sha256 TEXT NOT NULL,
  reason TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_due ON messages (state, next_attempt);
CREATE INDEX IF NOT EXISTS messages_sender ON messages (sender COLLATE NOCASE);
CREATE TABLE IF NOT EXISTS recipients (
  message_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  address TEXT NOT NULL,
  domain TEXT NOT NULL,
  status TEXT NOT NULL,
  attempts INTEGER,
  last_error TEXT,
  next_attempt INTEGER,
  dsn TEXT,
  extra TEXT,
  PRIMARY KEY (message_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS recipients_domain ON recipients (domain, status);
CREATE INDEX IF NOT EXISTS recipients_address ON recipients (address COLLATE NOCASE);
CREATE TABLE IF NOT EXISTS data (
  id TEXT PRIMARY KEY NOT NULL,
  bytes BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
  message_id TEXT NOT NULL,
  at INTEGER NOT NULL,
  text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_message ON history (message_id, at);
`;

/** What version 3 adds to version 2: message bodies in chunks (a rowid table: its rows are large). */
export const SCHEMA_V3_ADDITIONS = `
CREATE TABLE IF NOT EXISTS chunks (
  id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  bytes BLOB NOT NULL,
  PRIMARY KEY (id, seq)
);
`;

/** Tables and indexes of version 3. */
export const SCHEMA_V3 = SCHEMA_V2 + SCHEMA_V3_ADDITIONS;

/** The lower-cased domain of an address ("" when it has none). */
export function domainOf(address: string): string {
  const at = address.lastIndexOf("@");
  return at < 0 ? "" : address.slice(at + 1).toLowerCase().replace(/\.$/, "");
}

/** The recipient row's values, in INSERT order after message_id and idx. */
export function recipientValues(r: Recipient): (string | number | null)[] {
  const dsn = r.notify !== undefined || r.orcpt !== undefined
    ? JSON.stringify({ notify: r.notify, orcpt: r.orcpt })
    : null;
  return [
    r.address,
    domainOf(r.address),
    r.status,
    r.attempts ?? null,
    r.lastError ?? null,
    r.nextAttempt ?? null,
    dsn,
    r.extra !== undefined ? JSON.stringify(r.extra) : null,
  ];
}

/** A recipient row as read back. */
export interface RecipientRow {
  idx: number;
  address: string;
  status: string;
  attempts: number | null;
  last_error: string | null;
  next_attempt: number | null;
  dsn: string | null;
  extra: string | null;
}

/** Builds a {@link Recipient} from its row (absent fields stay absent). */
export function recipientFromRow(row: RecipientRow): Recipient {
  const r: Recipient = { address: row.address, status: row.status as Recipient["status"] };
  if (row.dsn !== null) {
    const dsn = JSON.parse(row.dsn) as Pick<Recipient, "notify" | "orcpt">;
    if (dsn.notify !== undefined) r.notify = dsn.notify;
    if (dsn.orcpt !== undefined) r.orcpt = dsn.orcpt;
  }
  if (row.attempts !== null) r.attempts = Number(row.attempts);
  if (row.last_error !== null) r.lastError = row.last_error;
  if (row.next_attempt !== null) r.nextAttempt = Number(row.next_attempt);
  if (row.extra !== null) r.extra = JSON.parse(row.extra);
  return r;
}

/** The envelope without recipients and delivery state, as the `envelope` column keeps it. */
export function envelopeColumn(env: Envelope): string {
  const { recipients: _r, delivery: _d, ...rest } = env;
  return JSON.stringify(rest);
}

/**
 * The state and next attempt a message has from its recipients (before any attempt: `incoming`); a message
 * stored with `hold` (quarantined by policy) starts in `hold`.
 */
export function initialState(
  env: Envelope,
): { state: "incoming" | "deferred" | "hold"; nextAttempt: number | null } {
  let next = Infinity;
  let tried = false;
  for (const r of env.recipients) {
    if ((r.attempts ?? 0) > 0) tried = true;
    if (r.status === "pending") next = Math.min(next, r.nextAttempt ?? env.receivedAt ?? 0);
  }
  const nextAttempt = next === Infinity ? null : next;
  if (env.hold !== undefined) return { state: "hold", nextAttempt };
  return { state: tried ? "deferred" : "incoming", nextAttempt };
}

/** Why a version-1 envelope cannot be converted, or undefined when it can. */
function checkOldEnvelope(id: string, parsed: unknown): string | undefined {
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    return "envelope is not an object";
  }
  const env = parsed as Record<string, unknown>;
  if (env.id !== id) return `envelope id "${String(env.id)}" does not match row id "${id}"`;
  if (typeof env.sender !== "string") return "envelope has no sender";
  if (!Array.isArray(env.recipients)) return "envelope has no recipients array";
  for (const r of env.recipients as unknown[]) {
    if (typeof (r as Recipient)?.address !== "string") return "a recipient has no address";
  }
  return undefined;
}

/** A version-1 row that could not be converted (the caller quarantines it). */
export interface BadOldRow {
  id: string;
  envelope: unknown;
  reason: string;
}

/**
 * Converts a version-1 database in place, inside the caller's transaction: one `messages` row and its
 * `recipients` rows per sound envelope; rows that cannot be converted are passed to `bad` (and left for the
 * caller to remove with their data). Returns the number of messages converted.
 */
export function migrateV1(db: DatabaseSync, bad: (row: BadOldRow) => void): number {
  db.exec(SCHEMA_V2);
  const insertMessage = db.prepare(
    `INSERT INTO messages (id, state, next_attempt, received_at, sender, envelope, delivery, data_length,
       data_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const insertRecipient = db.prepare(
    `INSERT INTO recipients (message_id, idx, address, domain, status, attempts, last_error, next_attempt, dsn,
       extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  let converted = 0;
  const rows = db.prepare(
    "SELECT id, envelope, data_length, data_sha256, created_at FROM envelopes ORDER BY created_at, id",
  ).iterate() as Iterable<Record<string, unknown>>;
  for (const row of rows) {
    const id = typeof row.id === "string" ? row.id : String(row.id);
    let parsed: unknown;
    try {
      parsed = JSON.parse(String(row.envelope));
    } catch (err) {
      bad({ id, envelope: row.envelope, reason: `envelope is not JSON: ${(err as Error).message}` });
      continue;
    }
    const reason = typeof row.id === "string" ? checkOldEnvelope(id, parsed) : "id is not text";
    if (reason !== undefined) {
      bad({ id, envelope: row.envelope, reason });
      continue;
    }
    const env = parsed as Envelope;
    env.receivedAt ??= Number(row.created_at);
    const { state, nextAttempt } = initialState(env);
    insertMessage.run(
      id,
      state,
      nextAttempt,
      env.receivedAt,
      env.sender,
      envelopeColumn(env),
      env.delivery !== undefined ? JSON.stringify(env.delivery) : null,
      Number(row.data_length),
      String(row.data_sha256),
    );
    env.recipients.forEach((r, i) => insertRecipient.run(id, i, ...recipientValues(r)));
    converted++;
  }
  db.exec("DROP TABLE envelopes");
  return converted;
}

/** The schema version of an open database: 0 empty, 1 the `envelopes` layout, else `user_version`. */
export function schemaVersion(db: DatabaseSync): number {
  const v = Number((db.prepare("PRAGMA user_version").get() as { user_version: number }).user_version);
  if (v !== 0) return v;
  const old = db.prepare("SELECT 1 AS one FROM sqlite_master WHERE type = 'table' AND name = 'envelopes'")
    .get();
  return old === undefined ? 0 : 1;
}
