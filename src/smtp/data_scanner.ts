/**
 * Message content as it arrives after DATA (RFC 5321 4.1.4, 4.5.2 dot-stuffing) or in BDAT chunks (RFC 3030).
 * End of data is only CRLF "." CRLF: a bare LF or bare CR never ends a message and never starts a line, so
 * none of the SMTP-smuggling variants (LF.LF, LF.CRLF, CR.CR, CRLF.CR, CR.CRLF) can split one.
 */

import { growInPlace, withHeadroom } from "../core/headroom.ts";

/** Free octets kept in front of a message for the fields Ferry prepends (Received:, Authentication-Results:). */
export const HEADROOM = 16 * 1024;

/** Below this size a message is not worth the growable buffer: a copy of it costs little. */
const SMALL = 64 * 1024;

/** Free octets in front of a small message: enough for Ferry's Received: field and a few more. */
const SMALL_ROOM = 4 * 1024;

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;

const LINE_START = 0, MID = 1, CR_SEEN = 2, DOT_SEEN = 3, DOT_CR = 4;

/** What to do with a bare CR or bare LF in message content. */
export type BareLineEndings = "reject" | "normalize";

/** Options for a scanner. */
export interface DataScannerOptions {
  /** Largest message kept, in octets; more is counted but not kept */
  maxSize: number;
  /** Longest line allowed, CRLF included */
  maxLine: number;
  bareLineEndings: BareLineEndings;
  /** "data": dot-stuffed with terminator; "bdat": raw chunks, no terminator */
  mode: "data" | "bdat";
  /** The size the client declared (MAIL SIZE=): room for that much is taken at once */
  expectedSize?: number;
}

/** Scans content bytes, keeping the unstuffed message and noting what was wrong with it. */
export class DataScanner {
  #opts: DataScannerOptions;
  /**
   * The content kept so far, in its first #outLen octets. A small message stays in a buffer with SMALL_ROOM
   * in front that doubles as needed; from SMALL octets on (at once when the client declared that much) it is
   * a buffer with HEADROOM in front that grows in place (core/headroom.ts), so the content is never copied to
   * make room.
   */
  #out: Uint8Array<ArrayBuffer>;
  #outLen = 0;
  /** #out grows in place */
  #growable = false;
  #state = LINE_START;
  #lineLen = 0;
  /** Octets of content seen (after unstuffing), whether kept or not */
  size = 0;
  /** A bare CR or LF was seen */
  bareLineEnding = false;
  /** A line longer than maxLine was seen */
  lineTooLong = false;
  /** The content passed maxSize */
  tooBig = false;

  constructor(opts: DataScannerOptions) {
    this.#opts = opts;
    const expected = opts.expectedSize ?? 0;
    if (expected >= SMALL && expected <= opts.maxSize) {
      this.#out = withHeadroom(expected, HEADROOM, opts.maxSize);
      this.#growable = true;
    } else {
      this.#out = withHeadroom(16 * 1024, SMALL_ROOM);
    }
    if (opts.mode === "bdat") this.#state = MID;
  }

  #emit(src: Uint8Array, from: number, to: number): void {
    const n = to - from;
    if (n <= 0) return;
    this.size += n;
    if (this.tooBig) return;
    if (this.size > this.#opts.maxSize) {
      this.tooBig = true;
      return;
    }
    if (this.#outLen + n > this.#out.length) this.#grow(this.#outLen + n);
    this.#out.set(src.subarray(from, to), this.#outLen);
    this.#outLen += n;
  }

  /** Makes room for `need` octets (never more than maxSize, past which nothing is kept). */
  #grow(need: number): void {
    const length = Math.min(Math.max(need, this.#out.length * 2), this.#opts.maxSize);
    const grown = this.#growable ? growInPlace(this.#out, length) : undefined;
    if (grown) {
      this.#out = grown;
      return;
    }
    // The small buffer outgrown (or, never expected, a growable one at its end): one copy of what it holds.
    this.#growable = length >= SMALL;
    const next = this.#growable
      ? withHeadroom(length, HEADROOM, this.#opts.maxSize)
      : withHeadroom(length, SMALL_ROOM);
    next.set(this.#out.subarray(0, this.#outLen));
    this.#out = next;
  }

  #byte(b: number): void {
    const one = new Uint8Array([b]);
    this.#emit(one, 0, 1);
  }

  #bare(kind: number): void {
    this.bareLineEnding = true;
    if (this.#opts.bareLineEndings === "normalize") {
      this.#emit(CRLF, 0, 2);
      this.#lineLen = 0;
    } else {
      this.#byte(kind);
      this.#lineLen++;
    }
  }

  #countLine(n: number): void {
    this.#lineLen += n;
    if (this.#lineLen > this.#opts.maxLine) this.lineTooLong = true;
  }

  /**
   * Feeds bytes; returns how many were consumed and whether the terminator was seen (DATA mode only).
   * After the terminator nothing more is consumed.
   */
  feed(bytes: Uint8Array): { consumed: number; ended: boolean } {
    let i = 0;
    const n = bytes.length;
    // Where the next CR and LF are (n: none left) for the state machine; found by the engine's indexOf, and
    // looked for again only once passed.
    let cr = -1;
    let lf = -1;
    const dotSpecial = this.#opts.mode === "data";
    while (i < n) {
      if (this.#state === MID || (this.#state === LINE_START && !(dotSpecial && bytes[i] === DOT))) {
        // Fast path: whole well-formed lines ("text CRLF", within maxLine, the next not starting with a dot)
        // are kept as one run. Anything else is left to the state machine below, from the line it is in.
        // Only CR and LF (both below 0x0e) need a look of their own; four octets at a time are passed over
        // while none of them is below 0x0e (see hasLow).
        const maxLine = this.#opts.maxLine;
        // Plain arithmetic, not shifts, for the word indices: a view can start 2 GiB or more into its buffer.
        const words = new Uint32Array(bytes.buffer, 0, Math.floor((bytes.byteOffset + n) / 4));
        const base = bytes.byteOffset;
        let p = i;
        let lineFrom = i - this.#lineLen;
        for (let q = i; q < n; q++) {
          if (((base + q) & 3) === 0) {
            q = skipPlainWords(words, base, q, words.length);
            if (q >= n) break;
          }
          const b = bytes[q];
          if (b > CR) continue;
          if (b === LF) break;
          if (b !== CR) continue;
          if (q + 1 === n || bytes[q + 1] !== LF || q + 2 - lineFrom > maxLine) break;
          q++;
          p = lineFrom = q + 1;
          if (p === n || (dotSpecial && bytes[p] === DOT)) break;
        }
        if (p > i) {
          this.#emit(bytes, i, p);
          this.#lineLen = 0;
          this.#state = LINE_START;
          i = p;
          continue;
        }
      }
      const b = bytes[i];
      switch (this.#state) {
        case LINE_START:
          if (b === DOT && this.#opts.mode === "data") {
            this.#state = DOT_SEEN;
            i++;
            continue;
          }
          this.#state = MID;
          continue;
        case DOT_SEEN:
          // A leading dot is removed (RFC 5321 4.5.2) unless it starts the terminator; it does not count
          // towards the line's length (4.5.3.1.6: "not counting the leading dot duplicated for transparency").
          if (b === CR) {
            this.#state = DOT_CR;
            i++;
            continue;
          }
          this.#state = MID;
          continue;
        case DOT_CR:
          if (b === LF) return { consumed: i + 1, ended: true };
          // ".<CR>x": the dot was stuffing, the CR is bare.
          this.#bare(CR);
          this.#state = MID;
          continue;
        case CR_SEEN:
          if (b === LF) {
            this.#emit(CRLF, 0, 2);
            this.#countLine(2);
            this.#lineLen = 0;
            this.#state = LINE_START;
            i++;
            continue;
          }
          this.#bare(CR);
          this.#state = MID;
          continue;
        default: {
          // MID: copy a run of ordinary bytes at once.
          if (lf < i) lf = indexOrEnd(bytes, LF, i);
          if (cr < i) cr = indexOrEnd(bytes, CR, i);
          const j = Math.min(cr, lf);
          if (j > i) {
            this.#emit(bytes, i, j);
            this.#countLine(j - i);
            i = j;
            if (i >= n) break;
          }
          if (bytes[i] === CR) this.#state = CR_SEEN;
          else this.#bare(LF);
          i++;
        }
      }
    }
    return { consumed: n, ended: false };
  }

  /** Ends a BDAT LAST body: a trailing CR with nothing after it is bare. */
  finish(): void {
    if (this.#state === CR_SEEN) {
      this.#bare(CR);
      this.#state = MID;
    }
  }

  /**
   * The content kept so far (unstuffed; CRLF line endings unless bare ones were kept), a view of the scanner's
   * own buffer, not a copy. Free octets are in front of it for the prefix Ferry adds (see core/headroom.ts):
   * {@link HEADROOM} from SMALL octets on, SMALL_ROOM below; a longer prefix means one copy.
   */
  data(): Uint8Array<ArrayBuffer> {
    return this.#out.subarray(0, this.#outLen);
  }
}

const CRLF = new Uint8Array([CR, LF]);

/** The index of `byte` in `bytes` from `from` on, or `bytes.length` when there is none. */
function indexOrEnd(bytes: Uint8Array, byte: number, from: number): number {
  const at = bytes.indexOf(byte, from);
  return at < 0 ? bytes.length : at;
}

/**
 * Whether any of the four octets in `word` is below 0x0e (a CR or LF may be among them). Subtracting 0x0e
 * from each octet sets the top bit of the lowest one that was smaller (a borrow only passes upwards, from an
 * octet that was already smaller); `& ~word` leaves out octets from 0x80 up.
 */
function hasLow(word: number): boolean {
  return ((word - 0x0e0e0e0e) & ~word & 0x80808080) !== 0;
}

/**
 * From index `q` of a view starting `base` octets into the buffer `words` covers (`base + q` a multiple of
 * four), passes over the words with no octet below 0x0e ({@link hasLow}), up to word `wordsEnd`; returns the
 * view's index where they end.
 */
export function skipPlainWords(words: Uint32Array, base: number, q: number, wordsEnd: number): number {
  let w = (base + q) / 4;
  while (w < wordsEnd && !hasLow(words[w])) w++;
  return w * 4 - base;
}
