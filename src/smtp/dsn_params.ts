/** RFC 3461 DSN parameters on MAIL (RET, ENVID) and RCPT (NOTIFY, ORCPT), validated for the server side. */

import type { NotifyKeyword, OriginalRecipient } from "../core/envelope.ts";
import { SmtpError } from "../core/reply.ts";
import { decodeXtext } from "./xtext.ts";

function bad(text: string): SmtpError {
  return new SmtpError(501, "5.5.4", text);
}

/** Parses RET=FULL|HDRS. */
export function parseRet(value: string | undefined): "FULL" | "HDRS" {
  const v = value?.toUpperCase();
  if (v === "FULL" || v === "HDRS") return v;
  throw bad("RET must be FULL or HDRS");
}

/** Parses ENVID=xtext (at most 100 characters, RFC 3461 4.4). */
export function parseEnvid(value: string | undefined): string {
  if (value === undefined || value.length > 100) throw bad("Bad ENVID");
  const decoded = decodeXtext(value);
  if (decoded === undefined || /[^\x20-\x7e]/.test(decoded)) throw bad("ENVID is not valid xtext");
  return decoded;
}

/** Parses NOTIFY=NEVER or a comma list of SUCCESS, FAILURE, DELAY. */
export function parseNotify(value: string | undefined): NotifyKeyword[] {
  if (!value) throw bad("Bad NOTIFY");
  const items = value.toUpperCase().split(",");
  const seen = new Set<NotifyKeyword>();
  for (const item of items) {
    if (item !== "NEVER" && item !== "SUCCESS" && item !== "FAILURE" && item !== "DELAY") {
      throw bad(`Bad NOTIFY keyword "${item}"`);
    }
    if (seen.has(item)) throw bad(`Duplicate NOTIFY keyword "${item}"`);
    seen.add(item);
  }
  if (seen.has("NEVER") && seen.size > 1) throw bad("NOTIFY=NEVER cannot be combined");
  return [...seen];
}

/** Text whose every backslash starts an RFC 6533 EmbeddedUnicodeChar: `\x{`, a code point in hex up to 10FFFF, `}`. */
const UTF8_ADDR_ESCAPES = /^(?:[^\\]|\\x\{(?:[0-9A-F]{2,5}|10[0-9A-F]{4})\})*$/i;

/** Parses ORCPT=addr-type;xtext (RFC 3461 4.2); the address must decode and be printable. */
export function parseOrcpt(value: string | undefined): OriginalRecipient {
  if (!value) throw bad("Bad ORCPT");
  const semi = value.indexOf(";");
  if (semi <= 0) throw bad("ORCPT needs addr-type;address");
  const type = value.slice(0, semi);
  if (!/^[A-Za-z0-9][A-Za-z0-9-]*$/.test(type)) throw bad("Bad ORCPT address type");
  const raw = value.slice(semi + 1);
  if (raw.length === 0 || raw.length > 500) throw bad("Bad ORCPT address");
  // utf-8 (RFC 6533 3) is kept as written; a backslash there may only start an \x{HEXPOINT} escape.
  const utf8 = type.toLowerCase() === "utf-8";
  if (utf8 && !UTF8_ADDR_ESCAPES.test(raw)) throw bad("ORCPT has a bad \\x{…} escape");
  const address = utf8 ? raw : decodeXtext(raw);
  if (address === undefined || /[\x00-\x1f\x7f]/.test(address)) throw bad("ORCPT is not valid xtext");
  return { type, address };
}
