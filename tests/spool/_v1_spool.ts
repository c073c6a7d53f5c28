/**
 * Writes a spool.db the way Ferry wrote it before schema version 2 (one `envelopes` table of JSON blobs
 * beside `data`): the same DDL and INSERTs as that code's commit path, for the migration tests.
 */

import { DatabaseSync } from "node:sqlite";
import { createHash } from "node:crypto";
import type { Envelope } from "../../src/core/envelope.ts";

const V1_SCHEMA = `
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

/** One message as the old code stored it; `envelopeJson` overrides the JSON (to write a broken row). */
export interface V1Message {
  envelope: Envelope;
  data: Uint8Array;
  envelopeJson?: string;
}

/** Creates `<dir>/spool.db` in the version-1 layout holding `messages`. */
export function writeV1Spool(dir: string, messages: V1Message[]): void {
  Deno.mkdirSync(dir, { recursive: true });
  const db = new DatabaseSync(`${dir}/spool.db`);
  try {
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = FULL");
    db.exec(V1_SCHEMA);
    const insertEnvelope = db.prepare(
      "INSERT INTO envelopes (id, envelope, data_length, data_sha256, created_at) VALUES (?, ?, ?, ?, ?)",
    );
    const insertData = db.prepare("INSERT OR REPLACE INTO data (id, bytes) VALUES (?, ?)");
    db.exec("BEGIN IMMEDIATE");
    for (const m of messages) {
      const digest = createHash("sha256").update(m.data).digest("hex");
      insertEnvelope.run(
        m.envelope.id,
        m.envelopeJson ?? JSON.stringify(m.envelope),
        m.data.length,
        digest,
        m.envelope.receivedAt,
      );
      insertData.run(m.envelope.id, m.data);
    }
    db.exec("COMMIT");
  } finally {
    db.close();
  }
}
