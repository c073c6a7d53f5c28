/**
 * The byte stream every room talks through: a plain Deno.Conn and an OpenSSL TLS session both fit it,
 * so the SMTP session never knows which it has.
 */

/** A duplex byte stream with Deno.Conn's read/write contract. */
export interface ByteStream {
  /** Reads into `p`; resolves to the number of bytes read, or null at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some of `p`; resolves to the number of bytes written. */
  write(p: Uint8Array): Promise<number>;
  /** Closes the stream (and the socket under it). Safe to call twice. */
  close(): void;
}

/** Writes all of `data` to `stream`. */
export async function writeAll(stream: ByteStream, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await stream.write(data.subarray(off));
}

/**
 * True for the errors a socket gives when the peer vanished (reset, broken pipe, aborted): a plain end of
 * the conversation, not a fault of the program.
 */
export function isConnectionLost(err: unknown): boolean {
  return err instanceof Deno.errors.ConnectionReset || err instanceof Deno.errors.BrokenPipe ||
    err instanceof Deno.errors.ConnectionAborted || err instanceof Deno.errors.NotConnected ||
    err instanceof Deno.errors.UnexpectedEof;
}
