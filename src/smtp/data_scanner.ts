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

/**
 * The memory all messages being received may hold together (`limits.dataMemory`): past it a message is read
 * to its end but not kept, and refused for now (452 4.3.1). Only the buffers of messages from SMALL octets on
 * are counted, by their current length, until the session is done with the message ({@link
 * DataScanner.finished}). They are held weakly, so a path that never says so (a connection lost mid-data)
 * cannot leave memory counted that is gone: a buffer collected, or handed to the spool's thread
 * (transferred), counts nothing.
 */
export class DataMemory {
  readonly limit: number;
  #held = new Set<WeakRef<ArrayBuffer>>();

  constructor(limit: number) {
    this.limit = limit;
  }

  /** Octets the counted buffers hold now. */
  used(): number {
    let used = 0;
    for (const ref of this.#held) {
      const n = ref.deref()?.byteLength ?? 0;
      if (n === 0) this.#held.delete(ref);
      used += n;
    }
    return used;
  }

  /** Whether `more` octets fit beside what is held now. */
  fits(more: number): boolean {
    return this.used() + more <= this.limit;
  }

  /** Counts `buffer` from now on, at its length at each look; the token {@link forget} takes. */
  hold(buffer: ArrayBuffer): WeakRef<ArrayBuffer> {
    const ref = new WeakRef(buffer);
    this.#held.add(ref);
    return ref;
  }

  /** Stops counting a buffer {@link hold} took. */
  forget(ref: WeakRef<ArrayBuffer> | undefined): void {
    if (ref !== undefined) this.#held.delete(ref);
  }
}

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
  /** The budget of memory for messages being received (`limits.dataMemory`); none: unbounded */
  memory?: DataMemory;
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
  /** #out's buffer as the memory budget counts it */
  #held: WeakRef<ArrayBuffer> | undefined;
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
  /** Keeping the content would have passed the memory budget (`limits.dataMemory`): it is not kept */
  overMemory = false;

  constructor(opts: DataScannerOptions) {
    this.#opts = opts;
    const expected = opts.expectedSize ?? 0;
    if (expected >= SMALL && expected <= opts.maxSize && this.#room(expected + HEADROOM)) {
      this.#out = withHeadroom(expected, HEADROOM, opts.maxSize);
      this.#growable = true;
      this.#held = opts.memory?.hold(this.#out.buffer);
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
    if (this.overMemory) return;
    if (this.#outLen + n > this.#out.length && !this.#grow(this.#outLen + n)) return;
    this.#out.set(src.subarray(from, to), this.#outLen);
    this.#outLen += n;
  }

  /**
   * Whether `more` octets of buffer fit the memory budget; when not, the content is no longer kept (what was
   * kept is let go) and the message will be refused for now.
   */
  #room(more: number): boolean {
    const memory = this.#opts.memory;
    if (memory === undefined || memory.fits(more)) return true;
    this.overMemory = true;
    // Nobody else holds the buffer before the end of data: its memory goes now, not at the next collection.
    if (this.#growable) this.#out.buffer.transfer(0);
    this.finished();
    this.#out = new Uint8Array(0);
    this.#outLen = 0;
    this.#growable = false;
    return false;
  }

  /**
   * Makes room for `need` octets (never more than maxSize, past which nothing is kept); false when the memory
   * budget has no room for them.
   */
  #grow(need: number): boolean {
    const length = Math.min(Math.max(need, this.#out.length * 2), this.#opts.maxSize);
    if (this.#growable) {
      if (!this.#room(length - this.#out.length)) return false;
      const grown = growInPlace(this.#out, length);
      if (grown) {
        this.#out = grown;
        return true;
      }
    }
    // The small buffer outgrown (or, never expected, a growable one at its end): one copy of what it holds.
    const growable = length >= SMALL;
    if (growable && !this.#room(length + HEADROOM)) return false;
    this.#growable = growable;
    const next = growable
      ? withHeadroom(length, HEADROOM, this.#opts.maxSize)
      : withHeadroom(length, SMALL_ROOM);
    if (growable) {
      this.finished();
      this.#held = this.#opts.memory?.hold(next.buffer);
    }
    next.set(this.#out.subarray(0, this.#outLen));
    this.#out = next;
    return true;
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

  /**
   * The message is over (stored, refused or dropped): its buffer no longer counts against the memory budget,
   * whoever still holds it.
   */
  finished(): void {
    this.#opts.memory?.forget(this.#held);
    this.#held = undefined;
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
