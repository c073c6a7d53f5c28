/**
 * An in-memory {@link Spool} for unit tests of other rooms: the SQLite spool on an in-memory database (same
 * schema, same contract), plus a hook to make writes fail like a broken disk.
 * Not durable, so never for production use.
 */

import type { Envelope } from "../core/envelope.ts";
import { type DeliveryUpdate, SpoolWriteError } from "./spool.ts";
import { SqliteSpool } from "./sqlite_spool.ts";
import { errorMessage } from "../core/error_message.ts";

/** Options of {@link MemorySpool}. */
export interface MemorySpoolOptions {
  /**
   * Called before each write; throw from it to simulate a failing disk (the write is then rejected with
   * SpoolWriteError and nothing changes)
   */
  beforeWrite?: (kind: "store" | "update" | "apply" | "remove", id: string) => void;
}

/** A spool that lives in memory. */
export class MemorySpool extends SqliteSpool {
  #beforeWrite: MemorySpoolOptions["beforeWrite"];

  constructor(options: MemorySpoolOptions = {}) {
    super({ dir: ":memory:", memory: true });
    this.#beforeWrite = options.beforeWrite;
  }

  #gate(kind: "store" | "update" | "apply" | "remove", id: string): SpoolWriteError | undefined {
    try {
      this.#beforeWrite?.(kind, id);
      return undefined;
    } catch (err) {
      return new SpoolWriteError(errorMessage(err), { cause: err });
    }
  }

  override store(
    envelope: Envelope,
    data: Uint8Array,
    options?: { transfer?: boolean; history?: string[] },
  ): Promise<void> {
    const err = this.#gate("store", envelope?.id);
    return err ? Promise.reject(err) : super.store(envelope, data.slice(), options);
  }

  override update(envelope: Envelope): Promise<void> {
    const err = this.#gate("update", envelope?.id);
    return err ? Promise.reject(err) : super.update(envelope);
  }

  override apply(update: DeliveryUpdate): Promise<void> {
    const err = this.#gate("apply", update.id);
    return err ? Promise.reject(err) : super.apply(update);
  }

  override remove(id: string): Promise<void> {
    const err = this.#gate("remove", id);
    return err ? Promise.reject(err) : super.remove(id);
  }
}
