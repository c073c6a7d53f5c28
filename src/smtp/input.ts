/**
 * Buffered input for the SMTP server: command lines with a length limit, raw bytes for DATA and BDAT,
 * reads under a deadline. The buffer can be emptied at the STARTTLS swap (RFC 3207, CVE-2011-0411 class).
 * The buffer starts small and grows only while a peer keeps it full, so an idle connection costs little.
 */

import { type ByteStream, isConnectionLost } from "../core/stream.ts";
import { after } from "../core/deadlines.ts";

/** Thrown when a read does not complete within its deadline. */
export class ReadTimeoutError extends Error {
  constructor() {
    super("Read timed out");
    this.name = "ReadTimeoutError";
  }
}

/** The result of taking one line from the buffer. */
export type LineResult = { line: string } | { tooLong: true } | null;

const LF = 0x0a;
/** What a new or released buffer holds: enough for any command line of the default limit. */
const INITIAL = 1024;
/** The most one read asks for. */
const MAX_READ = 64 * 1024;

/** A growable input buffer over a byte stream. */
export class Input {
  #stream: ByteStream;
  #buf = new Uint8Array(INITIAL);
  /** Free space the next read asks for: doubles while reads come back full, back to INITIAL on release */
  #want = INITIAL;
  /** What expect() announced, taken up by #want at the next read that brings data */
  #hint = 0;
  #lost = false;
  #start = 0;
  #end = 0;
  #eof = false;
  #skipping = false;
  #decoder = new TextDecoder();

  constructor(stream: ByteStream) {
    this.#stream = stream;
  }

  /** Replaces the stream (after STARTTLS); buffered bytes must have been discarded first. */
  setStream(stream: ByteStream): void {
    this.#stream = stream;
    this.#eof = this.#lost = false;
  }

  /** Number of bytes buffered and not yet consumed. */
  get pending(): number {
    return this.#end - this.#start;
  }

  /** True once the peer closed its side (or vanished: see `lost`). */
  get eof(): boolean {
    return this.#eof;
  }

  /** True when the stream ended by a reset or broken connection rather than an orderly close. */
  get lost(): boolean {
    return this.#lost;
  }

  /** Octets allocated for buffering (what an idle connection costs). */
  get capacity(): number {
    return this.#buf.length;
  }

  /** Gives back a buffer grown for a burst: keeps what is pending in an allocation of the initial size. */
  release(): void {
    this.#want = INITIAL;
    this.#hint = 0;
    const live = this.pending;
    if (this.#buf.length <= INITIAL || live > INITIAL) return;
    const next = new Uint8Array(INITIAL);
    next.set(this.#buf.subarray(this.#start, this.#end));
    this.#buf = next;
    this.#start = 0;
    this.#end = live;
  }

  /**
   * The peer is about to send `n` octets (message content): once a read brings some of it, the next read
   * asks for that much at once (up to MAX_READ), instead of doubling from small, a read and a copy of the
   * buffer each time. Only then: a client that announces content and sends nothing keeps a small buffer.
   */
  expect(n: number): void {
    this.#hint = Math.min(n, MAX_READ);
  }

  /** Drops everything buffered; returns how many bytes were dropped. */
  discard(): number {
    const n = this.pending;
    this.#start = this.#end = 0;
    return n;
  }

  /** Prepends bytes that were read before this buffer existed (e.g. after a PROXY header). */
  unshift(bytes: Uint8Array): void {
    this.#ensure(bytes.length);
    this.#buf.copyWithin(bytes.length, this.#start, this.#end);
    this.#buf.set(bytes, 0);
    this.#end = this.#end - this.#start + bytes.length;
    this.#start = 0;
  }

  /** The buffered bytes (a view, valid until the next fill). */
  peek(): Uint8Array {
    return this.#buf.subarray(this.#start, this.#end);
  }

  /** Consumes `n` buffered bytes. */
  advance(n: number): void {
    this.#start += n;
    if (this.#start === this.#end) this.#start = this.#end = 0;
  }

  #ensure(extra: number): void {
    if (this.#end + extra <= this.#buf.length) return;
    const live = this.#end - this.#start;
    if (live + extra <= this.#buf.length && this.#start > 0) {
      this.#buf.copyWithin(0, this.#start, this.#end);
    } else {
      const next = new Uint8Array(Math.max(this.#buf.length * 2, live + extra));
      next.set(this.#buf.subarray(this.#start, this.#end));
      this.#buf = next;
    }
    this.#start = 0;
    this.#end = live;
  }

  /**
   * Reads more bytes from the stream; false at end of stream, including a peer that reset the connection
   * (`lost` tells them apart). Throws ReadTimeoutError after `timeoutMs`, at once when it is not positive.
   */
  async fill(timeoutMs: number): Promise<boolean> {
    if (this.#eof) return false;
    if (timeoutMs <= 0) throw new ReadTimeoutError();
    if (this.#buf.length - this.#end < this.#want) this.#ensure(this.#want);
    const target = this.#buf.subarray(this.#end);
    let cancel: (() => void) | undefined;
    const timeout = new Promise<never>((_, reject) => {
      cancel = after(timeoutMs, () => reject(new ReadTimeoutError()));
    });
    try {
      const n = await Promise.race([this.#stream.read(target), timeout]);
      if (n === null) {
        this.#eof = true;
        return false;
      }
      this.#end += n;
      // A read that filled all the space offered means the peer has more: offer more next time.
      if (n === target.length) this.#want = Math.min(this.#want * 2, MAX_READ);
      if (this.#hint > this.#want) this.#want = this.#hint;
      this.#hint = 0;
      return true;
    } catch (err) {
      if (!isConnectionLost(err)) throw err;
      this.#eof = this.#lost = true;
      return false;
    } finally {
      cancel!();
    }
  }

  /**
   * Takes one line (terminated by LF, an optional CR before it removed) from the buffer without I/O.
   * A line longer than `max` octets (CRLF included) yields `{ tooLong: true }` once and the rest of it is skipped.
   * Returns null when no complete line is buffered.
   */
  takeLine(max: number): LineResult {
    for (;;) {
      const view = this.peek();
      const nl = view.indexOf(LF);
      if (this.#skipping) {
        if (nl < 0) {
          this.advance(view.length);
          return null;
        }
        this.advance(nl + 1);
        this.#skipping = false;
        continue;
      }
      if (nl < 0) {
        if (view.length >= max) {
          this.advance(view.length);
          this.#skipping = true;
          return { tooLong: true };
        }
        return null;
      }
      if (nl + 1 > max) {
        this.advance(nl + 1);
        return { tooLong: true };
      }
      let end = nl;
      if (end > 0 && view[end - 1] === 0x0d) end--;
      const line = this.#decoder.decode(view.subarray(0, end));
      this.advance(nl + 1);
      return { line };
    }
  }
}
