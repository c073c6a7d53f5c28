/**
 * Dot-stuffing for the DATA command (RFC 5321 4.5.2) and the end-of-data marker (4.1.1.4).
 * Trusts nothing about the message's line endings: bare CR and bare LF are sent as CRLF (RFC 5321 2.3.8
 * forbids sending them bare), so no byte sequence in a message can end the data early at a peer that is
 * lenient about line endings ("SMTP smuggling").
 */

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;

/** The end-of-data marker that follows a dot-stuffed message. */
export const DATA_TERMINATOR: Uint8Array = new Uint8Array([DOT, CR, LF]);

/**
 * The complete DATA payload (dot-stuffed message, then `.CRLF`) in pieces made from at most `size` octets
 * of the message each, so sending a large message costs a piece of memory, not a second copy of it.
 * Every piece is a view of ONE buffer, overwritten when the next
 * piece is made: the caller must be done with a piece (written it out) before asking for the next — a new
 * buffer per piece would leave garbage the size of the message before the collector runs.
 */
export function* encodeDataPieces(data: Uint8Array, size = 64 * 1024): Generator<Uint8Array> {
  const step = Math.max(1, Math.floor(size));
  let lineStart = true;
  let i = 0;
  // Worst case: every byte a "." at a line start or a bare line end; the final CRLF and terminator ride
  // on the last piece.
  const out = new Uint8Array(Math.min(step, data.length) * 2 + 2 + DATA_TERMINATOR.length);
  while (i < data.length) {
    const end = Math.min(i + step, data.length);
    let o = 0;
    for (; i < end; i++) {
      const b = data[i];
      if (b === CR || b === LF) {
        out[o++] = CR;
        out[o++] = LF;
        // The LF of a CRLF may be the first octet of the next piece: it is consumed here either way.
        if (b === CR && data[i + 1] === LF) i++;
        lineStart = true;
        continue;
      }
      if (lineStart && b === DOT) out[o++] = DOT;
      out[o++] = b;
      lineStart = false;
    }
    if (i >= data.length) {
      if (!lineStart) {
        out[o++] = CR;
        out[o++] = LF;
      }
      out.set(DATA_TERMINATOR, o);
      o += DATA_TERMINATOR.length;
    }
    yield out.subarray(0, o);
  }
  if (data.length === 0) yield DATA_TERMINATOR.slice();
}
