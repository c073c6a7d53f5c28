/**
 * An in-memory {@link Spool} for unit tests of other rooms: same contract as SqliteSpool (copies in and
 * out, rejects a duplicate store and an update of an unknown id) but nothing survives the process.
 * Trusts its callers; not durable, so never for production use.
 */

import type { Envelope } from "../core/envelope.ts";
import { type RecoveryReport, type Spool, type SpoolEntry, SpoolWriteError } from "./spool.ts";
import { newMessageId } from "./message_id.ts";
import { errorMessage } from "../core/error_message.ts";

/** Options of {@link MemorySpool}. */
export interface MemorySpoolOptions {
  /**
   * Called before each write; throw from it to simulate a failing disk (the write is then rejected with
   * SpoolWriteError and nothing changes)
   */
  beforeWrite?: (kind: "store" | "update" | "remove", id: string) => void;
}

/** A spool that lives in a Map. */
export class MemorySpool implements Spool {
  #messages = new Map<string, { envelope: string; data: Uint8Array }>();
  #open = false;
  #beforeWrite: MemorySpoolOptions["beforeWrite"];

  constructor(options: MemorySpoolOptions = {}) {
    this.#beforeWrite = options.beforeWrite;
  }

  /** Opens; an in-memory spool recovers nothing. */
  open(): Promise<RecoveryReport> {
    this.#open = true;
    return Promise.resolve({ recovered: [...this.#messages.keys()], quarantined: [] });
  }

  /** A new Exim-style message id. */
  newId(): string {
    return newMessageId();
  }

  /** Keeps a copy of the envelope and data; SpoolWriteError on a duplicate id or a simulated failure. */
  store(envelope: Envelope, data: Uint8Array): Promise<void> {
    return this.#write("store", envelope?.id, () => {
      if (this.#messages.has(envelope.id)) {
        throw new Error(`Message "${envelope.id}" is already in the spool`);
      }
      this.#messages.set(envelope.id, { envelope: JSON.stringify(envelope), data: data.slice() });
    });
  }

  /** Reads a copy of a message's data. */
  readData(id: string): Promise<Uint8Array> {
    return this.#read(() => {
      const entry = this.#messages.get(id);
      if (entry === undefined) throw new Deno.errors.NotFound(`No queued message "${id}"`);
      return entry.data.slice();
    });
  }

  /** Reads a copy of one envelope. */
  get(id: string): Promise<Envelope | undefined> {
    return this.#read(() => {
      const entry = this.#messages.get(id);
      return entry === undefined ? undefined : JSON.parse(entry.envelope) as Envelope;
    });
  }

  /** Lists copies of every envelope, in insertion order. */
  list(): Promise<SpoolEntry[]> {
    return this.#read(() =>
      [...this.#messages.values()].map((e) => ({ envelope: JSON.parse(e.envelope) as Envelope }))
    );
  }

  /** Replaces an envelope; SpoolWriteError when no message has its id. */
  update(envelope: Envelope): Promise<void> {
    return this.#write("update", envelope?.id, () => {
      const entry = this.#messages.get(envelope.id);
      if (entry === undefined) throw new Error(`No queued message "${envelope.id}"`);
      entry.envelope = JSON.stringify(envelope);
    });
  }

  /** Removes a message (unknown ids are ignored). */
  remove(id: string): Promise<void> {
    return this.#write("remove", id, () => {
      this.#messages.delete(id);
    });
  }

  /** Number of stored messages. */
  count(): Promise<number> {
    return this.#read(() => this.#messages.size);
  }

  /** Closes; the contents stay for a later open() of the same object. */
  close(): Promise<void> {
    this.#open = false;
    return Promise.resolve();
  }

  #read<T>(fn: () => T): Promise<T> {
    return Promise.try(() => {
      if (!this.#open) throw new Error("Spool is not open");
      return fn();
    });
  }

  #write(kind: "store" | "update" | "remove", id: string | undefined, apply: () => void): Promise<void> {
    if (!this.#open) return Promise.reject(new SpoolWriteError("Spool is not open"));
    if (typeof id !== "string" || id === "") {
      return Promise.reject(new TypeError("Envelope must have a non-empty string id"));
    }
    try {
      this.#beforeWrite?.(kind, id);
      apply();
      return Promise.resolve();
    } catch (err) {
      const message = errorMessage(err);
      return Promise.reject(new SpoolWriteError(message, { cause: err }));
    }
  }
}
