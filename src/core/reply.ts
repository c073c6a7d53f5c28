/**
 * SMTP replies and the one error type every room throws to answer a client (RFC 5321 4.2, RFC 3463).
 * The public text stays generic; `cause` carries detail for the log only.
 */

/** A reply as sent on the wire: a three-digit code, an optional RFC 3463 enhanced code, one or more lines. */
export interface Reply {
  code: number;
  enhanced?: string;
  lines: string[];
}

/** Builds a reply from a code, an enhanced code and text (text may hold several lines). */
export function reply(code: number, enhanced: string | undefined, text: string | string[]): Reply {
  return { code, enhanced, lines: Array.isArray(text) ? text : [text] };
}

/** Formats a reply for the wire: `250-first`, `250 last`, each line ending CRLF, enhanced code on every line. */
export function formatReply(r: Reply): string {
  const lines = r.lines.length ? r.lines : [""];
  let out = "";
  for (let i = 0; i < lines.length; i++) {
    const sep = i === lines.length - 1 ? " " : "-";
    const text = r.enhanced ? `${r.enhanced} ${lines[i]}` : lines[i];
    out += `${r.code}${sep}${text}\r\n`;
  }
  return out;
}

/** The error a policy step, the spool or the session throws to answer with a specific SMTP reply. */
export class SmtpError extends Error {
  readonly code: number;
  readonly enhanced: string;
  /** Close the connection after sending this reply. */
  readonly close: boolean;
  constructor(
    code: number,
    enhanced: string,
    message: string,
    options?: { cause?: unknown; close?: boolean },
  ) {
    super(message, { cause: options?.cause });
    this.name = "SmtpError";
    this.code = code;
    this.enhanced = enhanced;
    this.close = options?.close ?? false;
  }
  /** The reply this error answers with. */
  toReply(): Reply {
    return reply(this.code, this.enhanced, this.message);
  }
  /** True for 4xx replies. */
  get temporary(): boolean {
    return this.code >= 400 && this.code < 500;
  }
}

/** Turns anything thrown into a reply: SmtpErrors answer as themselves, everything else as 451 4.3.0. */
export function replyForError(err: unknown): Reply {
  if (err instanceof SmtpError) return err.toReply();
  return reply(451, "4.3.0", "Temporary local problem, please try again later");
}
