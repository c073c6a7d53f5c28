/**
 * The service extensions a server lists in its EHLO reply (RFC 5321 4.1.1.1): PIPELINING (RFC 2920),
 * SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8 (RFC 6531), CHUNKING and BINARYMIME (RFC 3030),
 * DSN (RFC 3461), PRDR (draft-hall-prdr), STARTTLS (RFC 3207), ENHANCEDSTATUSCODES (RFC 2034), AUTH (RFC 4954).
 * Trusts the reply only as far as parsing it: unknown keywords are kept, odd SIZE values are ignored.
 */

import type { Reply } from "../core/reply.ts";

/** What the peer offered, as the client uses it. */
export interface Capabilities {
  /** True after EHLO; false after the HELO fallback (then every other field is off). */
  esmtp: boolean;
  pipelining: boolean;
  /** SIZE was listed. */
  size: boolean;
  /** The fixed size limit in octets; undefined when SIZE has no (or a zero) limit. */
  sizeLimit?: number;
  eightBitMime: boolean;
  binaryMime: boolean;
  smtpUtf8: boolean;
  chunking: boolean;
  dsn: boolean;
  prdr: boolean;
  startTls: boolean;
  /** RFC 8689 */
  requireTls: boolean;
  enhancedStatusCodes: boolean;
  /** AUTH mechanisms, upper case. */
  auth: string[];
  /** Every keyword (upper case) with its parameters, known or not. */
  keywords: Map<string, string[]>;
}

/** The capabilities of a peer that answered HELO (no extensions). */
export function heloCapabilities(): Capabilities {
  return parseEhloReply({ code: 250, lines: [""] }, false);
}

/** Reads the extension lines (all lines after the first) of a 250 reply to EHLO. */
export function parseEhloReply(reply: Reply, esmtp = true): Capabilities {
  const keywords = new Map<string, string[]>();
  if (esmtp) {
    for (const line of reply.lines.slice(1)) {
      const [word, ...params] = line.trim().split(/\s+/);
      if (!word || !/^[A-Za-z0-9][A-Za-z0-9-]*$/.test(word)) continue;
      keywords.set(word.toUpperCase(), params);
    }
  }
  const sizeParam = keywords.get("SIZE")?.[0];
  const sizeLimit = sizeParam && /^\d+$/.test(sizeParam) && Number(sizeParam) > 0
    ? Number(sizeParam)
    : undefined;
  return {
    esmtp,
    pipelining: keywords.has("PIPELINING"),
    size: keywords.has("SIZE"),
    sizeLimit,
    eightBitMime: keywords.has("8BITMIME"),
    binaryMime: keywords.has("BINARYMIME"),
    smtpUtf8: keywords.has("SMTPUTF8"),
    chunking: keywords.has("CHUNKING"),
    dsn: keywords.has("DSN"),
    prdr: keywords.has("PRDR"),
    startTls: keywords.has("STARTTLS"),
    requireTls: keywords.has("REQUIRETLS"),
    enhancedStatusCodes: keywords.has("ENHANCEDSTATUSCODES"),
    auth: (keywords.get("AUTH") ?? []).map((m) => m.toUpperCase()),
    keywords,
  };
}
