/**
 * Incremental parser for SMTP replies as a client reads them (RFC 5321 4.2, multi-line replies 4.2.1;
 * RFC 2034/3463 enhanced status codes). Pure: bytes in, replies out. Trusts nothing the peer sends:
 * a garbled line or a multi-line reply whose lines disagree on the code is a `ReplySyntaxError`.
 */

import type { Reply } from "../core/reply.ts";

/** A reply the peer sent that is not valid SMTP (bad code, mismatched codes, overlong line). */
export class ReplySyntaxError extends Error {
  /** The offending line as read (decoded leniently, truncated to 200 characters). */
  readonly line: string;
  constructor(message: string, line: string) {
    super(message);
    this.name = "ReplySyntaxError";
    this.line = line.slice(0, 200);
  }
}

/** What `parseReplies` found: the complete replies and the bytes of any incomplete one. */
export interface ParsedReplies {
  replies: Reply[];
  /** Bytes not yet part of a complete reply; prepend them to the next read. */
  leftover: Uint8Array;
}

/** Limits for `parseReplies`. */
export interface ReplyParserOptions {
  /** Longest line accepted, CRLF included (RFC 5321 4.5.3.1.5 says 512; default 4096 to be lenient). */
  maxLineLength?: number;
  /** Most lines in one multi-line reply (default 1000). */
  maxLines?: number;
}

const LINE = /^([2-5][0-9][0-9])([ -]|$)(.*)$/s;
const ENHANCED = /^([245])\.(\d{1,3})\.(\d{1,3})(?: +|$)/;
const decoder = new TextDecoder("utf-8");

/**
 * Parses every complete reply at the start of `buffer`. A line ends with CRLF (a bare LF is tolerated);
 * `250 text` or a bare `250` ends a reply, `250-text` continues it. The enhanced code is taken from the
 * first line when its class matches the reply code, and stripped from every line that carries it.
 */
export function parseReplies(buffer: Uint8Array, options: ReplyParserOptions = {}): ParsedReplies {
  const maxLine = options.maxLineLength ?? 4096;
  const maxLines = options.maxLines ?? 1000;
  const replies: Reply[] = [];
  let replyStart = 0;
  let pos = 0;
  let pending: { code: string; lines: string[] } | undefined;
  while (pos < buffer.length) {
    const lf = buffer.indexOf(0x0a, pos);
    if (lf < 0) break;
    if (lf + 1 - pos > maxLine) {
      throw new ReplySyntaxError("Reply line too long", decoder.decode(buffer.subarray(pos, lf)));
    }
    const end = lf > pos && buffer[lf - 1] === 0x0d ? lf - 1 : lf;
    const text = decoder.decode(buffer.subarray(pos, end));
    pos = lf + 1;
    const m = LINE.exec(text);
    if (!m) throw new ReplySyntaxError("Garbled reply line", text);
    const [, code, sep, rest] = m;
    if (pending && pending.code !== code) {
      throw new ReplySyntaxError(`Multi-line reply changes code from ${pending.code} to ${code}`, text);
    }
    pending ??= { code, lines: [] };
    pending.lines.push(rest);
    if (pending.lines.length > maxLines) throw new ReplySyntaxError("Multi-line reply too long", text);
    if (sep !== "-") {
      replies.push(finish(Number(code), pending.lines));
      pending = undefined;
      replyStart = pos;
    }
  }
  if (buffer.length - pos > maxLine) {
    throw new ReplySyntaxError("Reply line too long", decoder.decode(buffer.subarray(pos, pos + 200)));
  }
  return { replies, leftover: buffer.slice(replyStart) };
}

function finish(code: number, raw: string[]): Reply {
  const first = ENHANCED.exec(raw[0]);
  if (!first || Number(first[1]) !== Math.floor(code / 100)) return { code, lines: raw };
  const enhanced = `${first[1]}.${Number(first[2])}.${Number(first[3])}`;
  const lines = raw.map((line) => {
    const m = ENHANCED.exec(line);
    return m && m[1] === first[1] ? line.slice(m[0].length) : line;
  });
  return { code, enhanced, lines };
}

/** The reply as one line of text for logs and DSN diagnostics: `550 5.1.1 No such user`. */
export function replyText(r: Reply): string {
  const text = r.lines.join(" ").trim();
  return [String(r.code), r.enhanced, text].filter(Boolean).join(" ");
}
