/**
 * Dot-stuffing for the DATA command (RFC 5321 4.5.2) and the end-of-data marker (4.1.1.4).
 * Trusts nothing about the message's line endings: bare CR and bare LF are sent as CRLF (RFC 5321 2.3.8
 * forbids sending them bare), so no byte sequence in a message can end the data early at a peer that is
 * lenient about line endings ("SMTP smuggling").
 */

import { skipPlainWords } from "./data_scanner.ts";

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
  // Text goes out as it is except at a dot that starts a line and at a bare CR or LF: everything between
  // those is copied in one run, found four octets at a time (skipPlainWords, as the DATA scanner does).
  const base = data.byteOffset;
  const words = new Uint32Array(data.buffer, 0, Math.floor((base + data.length) / 4));
  while (i < data.length) {
    const end = Math.min(i + step, data.length);
    const wordsEnd = Math.floor((base + end) / 4);
    let o = 0;
    while (i < end) {
      if (lineStart && data[i] === DOT) out[o++] = DOT;
      let stop = end;
      for (let q = i; q < end;) {
        if (((base + q) & 3) === 0) {
          q = skipPlainWords(words, base, q, wordsEnd);
          if (q >= end) break;
        }
        const b = data[q];
        if (b > CR) {
          q++;
        } else if (b === CR && q + 1 < end && data[q + 1] === LF) {
          // A CRLF in this piece: copied as it is, unless a dot starts the next line here.
          q += 2;
          if (q < end && data[q] === DOT) {
            stop = q;
            break;
          }
        } else if (b === CR || b === LF) {
          stop = q;
          break;
        } else {
          q++;
        }
      }
      if (stop > i) {
        out.set(data.subarray(i, stop), o);
        o += stop - i;
        lineStart = data[stop - 1] === LF;
        i = stop;
      }
      if (i === end || data[i] === DOT) continue;
      // A bare CR or LF, or a CRLF cut by the piece's end, goes out as CRLF. The LF of a CRLF may be the
      // first octet of the next piece: it is consumed here either way.
      out[o++] = CR;
      out[o++] = LF;
      i += data[i] === CR && data[i + 1] === LF ? 2 : 1;
      lineStart = true;
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
