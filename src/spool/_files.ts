/**
 * File helpers of the spool: durable writes and directory syncs for quarantine evidence, and quarantine
 * names that cannot escape their folder.
 */

import { MESSAGE_ID_PATTERN } from "./message_id.ts";

/** A file name for quarantined things: the id when it is a plain message id, else a hex form of it. */
export function quarantineName(id: string): string {
  if (MESSAGE_ID_PATTERN.test(id)) return id;
  const bytes = new TextEncoder().encode(id).slice(0, 48);
  return `bad-${bytes.toHex()}`;
}

/** Writes a file and fsyncs it (quarantine evidence must survive a crash before the row is deleted). */
export function writeDurably(path: string, bytes: Uint8Array): void {
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
export function syncDir(path: string): void {
  const dir = Deno.openSync(path, { read: true });
  try {
    dir.syncSync();
  } finally {
    dir.close();
  }
}

/** Whether a path exists (a dangling symlink counts). */
export function existsSync(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}
