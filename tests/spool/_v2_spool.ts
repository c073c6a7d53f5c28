/**
 * Writes a spool.db the way Ferry wrote it at schema version 2 (bodies whole in `data`): the same DDL and
 * INSERTs as that code's store path, for the migration tests.
 */

import { DatabaseSync } from "node:sqlite";
import { createHash } from "node:crypto";
import type { Envelope } from "../../src/core/envelope.ts";
import { envelopeColumn, initialState, recipientValues, SCHEMA_V2 } from "../../src/spool/_schema.ts";

/** One message as the schema-2 code stored it. */
export interface V2Message {
  envelope: Envelope;
  data: Uint8Array;
}

/** Creates `<dir>/spool.db` in the version-2 layout holding `messages`. */
export function writeV2Spool(dir: string, messages: V2Message[]): void {
  Deno.mkdirSync(dir, { recursive: true });
  const db = new DatabaseSync(`${dir}/spool.db`);
  try {
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = FULL");
    db.exec(SCHEMA_V2);
    db.exec("PRAGMA user_version = 2");
    const insertMessage = db.prepare(
      `INSERT INTO messages (id, state, next_attempt, received_at, sender, envelope, delivery, data_length,
         data_sha256) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const insertRecipient = db.prepare(
      `INSERT OR REPLACE INTO recipients (message_id, idx, address, domain, status, attempts, last_error,
         next_attempt, dsn, extra) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const insertData = db.prepare("INSERT OR REPLACE INTO data (id, bytes) VALUES (?, ?)");
    db.exec("BEGIN IMMEDIATE");
    for (const { envelope: env, data } of messages) {
      const { state, nextAttempt } = initialState(env);
      insertMessage.run(
        env.id,
        state,
        nextAttempt,
        env.receivedAt,
        env.sender,
        envelopeColumn(env),
        env.delivery !== undefined ? JSON.stringify(env.delivery) : null,
        data.length,
        createHash("sha256").update(data).digest("hex"),
      );
      env.recipients.forEach((r, i) => insertRecipient.run(env.id, i, ...recipientValues(r)));
      insertData.run(env.id, data);
    }
    db.exec("COMMIT");
  } finally {
    db.close();
  }
}
