/**
 * The client's byte plumbing: reads replies and writes commands over a `ByteStream`, each under a deadline
 * (RFC 5321 4.5.3.2). A passed deadline closes the stream — a peer that is late once cannot be trusted to
 * stay in step — and throws `SmtpTimeoutError`. Trusts the peer for nothing: garbled replies and replies
 * that never end are protocol errors, a closed stream is a connection error.
 */

import type { Reply } from "../core/reply.ts";
import { type ByteStream, writeAll } from "../core/stream.ts";
import { type ClientStage, SmtpClientError, SmtpTimeoutError } from "./client_error.ts";
import { parseReplies, ReplySyntaxError } from "./reply_parser.ts";
import { after } from "../core/deadlines.ts";

/** Most bytes of replies buffered before the peer is considered broken. */
const MAX_BUFFER = 256 * 1024;

/** A stream with reply framing and deadlines; owned by one `SmtpClient`. */
export class ClientConnection {
  #stream: ByteStream;
  #buf: Uint8Array = new Uint8Array(0);
  #queue: Reply[] = [];
  #closed = false;

  constructor(stream: ByteStream) {
    this.#stream = stream;
  }

  /** The stream in use. */
  get stream(): ByteStream {
    return this.#stream;
  }

  /** True once the stream was closed (by us, by a timeout or by the peer). */
  get closed(): boolean {
    return this.#closed;
  }

  /** True when bytes or replies have arrived that nobody asked for yet. */
  get hasUnread(): boolean {
    return this.#buf.length > 0 || this.#queue.length > 0;
  }

  /** Replaces the stream (after a TLS upgrade); anything buffered from the old one is dropped. */
  swap(stream: ByteStream): void {
    this.#stream = stream;
    this.#buf = new Uint8Array(0);
    this.#queue = [];
  }

  /** Reads the next complete reply, waiting at most `timeoutMs`. */
  async readReply(stage: ClientStage, timeoutMs: number): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    while (this.#queue.length === 0) {
      if (this.#closed) throw closedError(stage);
      const chunk = new Uint8Array(16 * 1024);
      const n = await this.#timed(
        this.#stream.read(chunk),
        stage,
        Math.max(0, deadline - Date.now()),
        timeoutMs,
      );
      if (n === null) {
        this.close();
        throw closedError(stage);
      }
      const joined = new Uint8Array(this.#buf.length + n);
      joined.set(this.#buf);
      joined.set(chunk.subarray(0, n), this.#buf.length);
      try {
        const { replies, leftover } = parseReplies(joined);
        this.#queue.push(...replies);
        this.#buf = leftover;
      } catch (err) {
        this.close();
        if (!(err instanceof ReplySyntaxError)) throw err;
        throw protocolError(stage, `${err.message}: "${err.line}"`, err);
      }
      if (this.#buf.length > MAX_BUFFER) {
        this.close();
        throw protocolError(stage, "Reply never ends");
      }
    }
    const r = this.#queue.shift()!;
    // 421: the server is closing the channel (RFC 5321 3.8); nothing more can be sent.
    if (r.code === 421) this.close();
    return r;
  }

  /** Writes all of `data`, waiting at most `timeoutMs`. */
  async write(data: Uint8Array, stage: ClientStage, timeoutMs: number): Promise<void> {
    if (this.#closed) throw closedError(stage);
    await this.#timed(writeAll(this.#stream, data), stage, timeoutMs, timeoutMs);
  }

  /** Closes the stream; safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#stream.close();
    } catch {
      // already closed by the peer or the TLS layer
    }
  }

  async #timed<T>(op: Promise<T>, stage: ClientStage, waitMs: number, timeoutMs: number): Promise<T> {
    let cancel: (() => void) | undefined;
    const expired = new Promise<never>((_, reject) => {
      cancel = after(waitMs, () => reject(new SmtpTimeoutError(stage, timeoutMs)));
    });
    try {
      return await Promise.race([op, expired]);
    } catch (err) {
      // The stream is no longer in a known state: close it, and keep the abandoned operation from
      // surfacing as an unhandled rejection.
      op.catch(() => {});
      this.close();
      if (err instanceof SmtpClientError) throw err;
      throw new SmtpClientError(
        stage,
        "connection",
        { code: 421, enhanced: "4.4.2", lines: [`Connection failed: ${(err as Error)?.message ?? err}`] },
        undefined,
        { cause: err },
      );
    } finally {
      cancel?.();
    }
  }
}

function closedError(stage: ClientStage): SmtpClientError {
  return new SmtpClientError(stage, "connection", {
    code: 421,
    enhanced: "4.4.2",
    lines: ["Connection closed by peer"],
  });
}

function protocolError(stage: ClientStage, detail: string, cause?: unknown): SmtpClientError {
  return new SmtpClientError(
    stage,
    "protocol",
    { code: 451, enhanced: "4.5.0", lines: [`Protocol error: ${detail}`] },
    undefined,
    { cause },
  );
}
