/**
 * Reads a PROXY protocol header (HAProxy `doc/proxy-protocol.txt`, v1 and v2) off the start of a stream,
 * under a deadline. Trusts nothing it reads; the caller decides whether this peer may send a header at all.
 */

import type { ByteStream } from "../core/stream.ts";
import { parseProxyHeader, PROXY_V2_DEFAULT_MAX_LENGTH, type ProxyHeader } from "./proxy_protocol.ts";

/** Why no header came: malformed, not complete in time, the peer closed first, or the caller aborted. */
export type ProxyReadError = "invalid" | "late" | "missing" | "aborted";

/** Options for {@link readProxyHeader}. */
export interface ReadProxyOptions {
  /** How long the whole header may take to arrive, in milliseconds. */
  timeoutMs: number;
  /** Stops waiting early; the result then has error "aborted". */
  signal?: AbortSignal;
  /** Largest v2 header accepted, in bytes (default 1536). */
  maxLength?: number;
}

/** What {@link readProxyHeader} found. Exactly one of `header` and `error` is set. */
export interface ProxyReadResult {
  /** The valid header. */
  header?: ProxyHeader;
  /** Why there is no header. */
  error?: ProxyReadError;
  /** Detail for the log when `error` is set. */
  reason?: string;
  /**
   * Bytes already read past the header (or, on error, everything read). A client that waits for the
   * banner sends nothing here, so non-empty `rest` after a good header means an early talker.
   */
  rest: Uint8Array;
  /**
   * The stream to keep reading from, continuing after `rest` (it does not repeat `rest`). After a timeout
   * or abort a read may still be in flight on the original stream; this wrapper hands its bytes out first,
   * so nothing the client sends is lost. Closing it closes the original.
   */
  stream: ByteStream;
}

const CHUNK = 2048;

/**
 * Reads from `stream` until a complete PROXY header is in hand, the bytes cannot be one, the peer
 * closes, or `timeoutMs` passes. Never throws for a peer's fault; a read error counts as "missing".
 */
export async function readProxyHeader(
  stream: ByteStream,
  options: ReadProxyOptions,
): Promise<ProxyReadResult> {
  const maxLength = options.maxLength ?? PROXY_V2_DEFAULT_MAX_LENGTH;
  let buf: Uint8Array = new Uint8Array(0);
  let inFlight: Promise<Uint8Array | null | Error> | undefined;
  const done = (r: Omit<ProxyReadResult, "stream">): ProxyReadResult => ({
    ...r,
    stream: inFlight ? new PendingReadStream(stream, inFlight) : stream,
  });

  if (options.signal?.aborted) return done({ error: "aborted", reason: "aborted before reading", rest: buf });

  let timer: ReturnType<typeof setTimeout> | undefined;
  let onAbort: (() => void) | undefined;
  const stop = new Promise<"late" | "aborted">((resolve) => {
    timer = setTimeout(() => resolve("late"), options.timeoutMs);
    onAbort = () => resolve("aborted");
    options.signal?.addEventListener("abort", onAbort, { once: true });
  });
  try {
    while (true) {
      const parsed = parseProxyHeader(buf, { maxLength });
      if (parsed.kind === "ok") return done({ header: parsed.header, rest: buf.slice(parsed.length) });
      if (parsed.kind === "invalid") return done({ error: "invalid", reason: parsed.reason, rest: buf });

      const read = readChunk(stream);
      inFlight = read;
      const got = await Promise.race([read.then((chunk) => ({ chunk })), stop]);
      if (got === "late") {
        return done({
          error: "late",
          reason: `no complete PROXY header within ${options.timeoutMs} ms`,
          rest: buf,
        });
      }
      if (got === "aborted") return done({ error: "aborted", reason: "aborted while reading", rest: buf });
      inFlight = undefined;
      if (got.chunk instanceof Error) {
        return done({ error: "missing", reason: `read failed: ${got.chunk.message}`, rest: buf });
      }
      if (got.chunk === null) {
        return done({
          error: "missing",
          reason: buf.length
            ? `connection closed after ${buf.length} bytes of a PROXY header`
            : "connection closed",
          rest: buf,
        });
      }
      buf = concat(buf, got.chunk);
    }
  } finally {
    clearTimeout(timer);
    if (onAbort) options.signal?.removeEventListener("abort", onAbort);
  }
}

/** One read as a fresh copy; null at end of stream; a thrown error as a value so a dropped promise never rejects. */
function readChunk(stream: ByteStream): Promise<Uint8Array | null | Error> {
  const p = new Uint8Array(CHUNK);
  return stream.read(p).then(
    (n) => (n === null ? null : p.slice(0, n)),
    (e) => (e instanceof Error ? e : new Error(String(e))),
  );
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/** A stream whose first read delivers what a read started earlier (and not yet consumed) produced. */
class PendingReadStream implements ByteStream {
  #inner: ByteStream;
  #pending: Promise<Uint8Array | null | Error> | undefined;
  #left: Uint8Array = new Uint8Array(0);

  constructor(inner: ByteStream, pending: Promise<Uint8Array | null | Error>) {
    this.#inner = inner;
    this.#pending = pending;
  }

  async read(p: Uint8Array): Promise<number | null> {
    if (this.#pending) {
      const got = await this.#pending;
      this.#pending = undefined;
      if (got instanceof Error) throw got;
      if (got === null) return null;
      this.#left = got;
    }
    if (this.#left.length) {
      const n = Math.min(p.length, this.#left.length);
      p.set(this.#left.subarray(0, n));
      this.#left = this.#left.subarray(n);
      return n;
    }
    return this.#inner.read(p);
  }

  write(p: Uint8Array): Promise<number> {
    return this.#inner.write(p);
  }

  close(): void {
    this.#inner.close();
  }
}
