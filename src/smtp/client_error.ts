/**
 * Errors of the SMTP client session (RFC 5321 client side). Each carries the stage it happened at and a
 * reply — the peer's own, or one Ferry made up for a local refusal, a timeout or a broken connection —
 * so the delivery side can tell host, recipient and message problems apart and write a DSN.
 */

import type { Reply } from "../core/reply.ts";
import { replyText } from "./reply_parser.ts";

/** Where in the session an error happened. */
export type ClientStage =
  | "connect"
  | "greeting"
  | "ehlo"
  | "starttls"
  | "auth"
  | "mail"
  | "rcpt"
  | "data"
  | "bdat"
  | "rset"
  | "quit";

/**
 * What went wrong: `reply` — the peer answered with a failure; `local` — Ferry refused before sending
 * (message too big, extension missing, bad address); `protocol` — the peer's reply was garbled;
 * `connection` — the peer closed or the stream failed; `timeout` — the peer was too slow.
 */
export type ClientErrorKind = "reply" | "local" | "protocol" | "connection" | "timeout";

/** A failure of the SMTP client session, with the stage and the reply that describe it. */
export class SmtpClientError extends Error {
  /** The stage the session was in. */
  readonly stage: ClientStage;
  /** The kind of failure. */
  readonly kind: ClientErrorKind;
  /** The peer's reply, or the reply Ferry uses to describe a local or transport failure. */
  readonly reply: Reply;
  constructor(
    stage: ClientStage,
    kind: ClientErrorKind,
    reply: Reply,
    message?: string,
    options?: { cause?: unknown },
  ) {
    super(message ?? `${stage}: ${replyText(reply)}`, options);
    this.name = "SmtpClientError";
    this.stage = stage;
    this.kind = kind;
    this.reply = reply;
  }
  /** The reply code. */
  get code(): number {
    return this.reply.code;
  }
  /** The enhanced status code, when known. */
  get enhanced(): string | undefined {
    return this.reply.enhanced;
  }
  /** The reply text, lines joined by a space. */
  get text(): string {
    return this.reply.lines.join(" ");
  }
  /** True when a later attempt may succeed (4xx, timeouts, broken connections). */
  get temporary(): boolean {
    return this.reply.code < 500;
  }
}

/** The peer did not answer (or take our data) within the stage's deadline (RFC 5321 4.5.3.2). */
export class SmtpTimeoutError extends SmtpClientError {
  /** The deadline that passed, in milliseconds. */
  readonly timeoutMs: number;
  constructor(stage: ClientStage, timeoutMs: number) {
    super(
      stage,
      "timeout",
      { code: 451, enhanced: "4.4.2", lines: [`Timeout after ${timeoutMs}ms at ${stage}`] },
      `Timeout after ${timeoutMs}ms at ${stage}`,
    );
    this.name = "SmtpTimeoutError";
    this.timeoutMs = timeoutMs;
  }
}
