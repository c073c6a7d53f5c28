/**
 * The spool contract. A message is durable (data and envelope on disk, synced) when `store()` resolves;
 * only then may the SMTP side answer 250. The spool knows nothing of SMTP.
 */

import type { Envelope } from "../core/envelope.ts";

/** A queued message as listed: its envelope (data is read separately). */
export interface SpoolEntry {
  envelope: Envelope;
}

/** What start-up recovery found. */
export interface RecoveryReport {
  /** Ids of messages recovered into the queue */
  recovered: string[];
  /** Entries moved to the quarantine folder, with the reason */
  quarantined: { id: string; reason: string; path: string }[];
}

/** Thrown by `store()` when the message could not be made durable (disk full, I/O error). */
export class SpoolWriteError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SpoolWriteError";
  }
}

/** A durable message store. */
export interface Spool {
  /** Opens the store and recovers what it holds; corrupt entries go to quarantine, never crash. */
  open(): Promise<RecoveryReport>;
  /** A new Exim-style message id, unique across restarts and processes sharing the spool. */
  newId(): string;
  /** Stores a message durably; throws SpoolWriteError when it cannot. */
  store(envelope: Envelope, data: Uint8Array): Promise<void>;
  /** Reads a message's data. */
  readData(id: string): Promise<Uint8Array>;
  /** Reads one envelope, or undefined when there is no such message. */
  get(id: string): Promise<Envelope | undefined>;
  /** Lists every queued message. */
  list(): Promise<SpoolEntry[]>;
  /** Durably replaces a queued message's envelope (recipient states, delivery state). */
  update(envelope: Envelope): Promise<void>;
  /** Removes a message for good (delivery complete). */
  remove(id: string): Promise<void>;
  /** Number of queued messages. */
  count(): Promise<number>;
  /** Flushes and closes. */
  close(): Promise<void>;
}
