/**
 * SMTP command-line parsing (RFC 5321 4.1, 4.1.2): verbs, MAIL/RCPT paths and ESMTP parameters.
 * Pure functions, no I/O. Trusts nothing: every path is checked for syntax and length limits.
 */

import { SmtpError } from "../core/reply.ts";
import { isIp } from "../core/ip.ts";
import { utf8Length } from "../core/utf8.ts";

/** A command line split into its upper-cased verb and the rest. */
export interface Command {
  verb: string;
  arg: string;
}

/** Splits a command line (without CRLF) into verb and argument. */
export function parseCommand(line: string): Command {
  const m = /^([A-Za-z]+)(?: (.*))?$/s.exec(line.trimEnd());
  if (!m) return { verb: line.trim().split(/\s/)[0]?.toUpperCase() ?? "", arg: "" };
  return { verb: m[1].toUpperCase(), arg: m[2]?.trim() ?? "" };
}

/** A parsed mailbox: local part (as written, quotes removed) and domain (as written). */
export interface Mailbox {
  local: string;
  domain: string;
}

/** A parsed MAIL or RCPT argument. */
export interface PathArg {
  /** The mailbox as `local@domain` ("" for the null reverse path) */
  address: string;
  mailbox?: Mailbox;
  /** True when an RFC 5321 source route (`@a,@b:`) was present and stripped */
  sourceRoute: boolean;
  /** ESMTP parameters, keys upper-cased, value undefined for a bare keyword */
  params: Map<string, string | undefined>;
}

const ATEXT = /^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\uFFFF]+$/u;
const LABEL = /^[A-Za-z0-9\u0080-\uFFFF](?:[A-Za-z0-9\u0080-\uFFFF-]*[A-Za-z0-9\u0080-\uFFFF])?$/u;

function syntax(text: string): SmtpError {
  return new SmtpError(501, "5.1.7", text);
}

/** Checks a domain or address literal; returns an error text or undefined. */
export function checkDomain(domain: string): string | undefined {
  if (domain.length === 0) return "empty domain";
  if (utf8Length(domain) > 255) return "domain too long";
  if (domain.startsWith("[")) {
    if (!domain.endsWith("]")) return "bad address literal";
    const inner = domain.slice(1, -1);
    if (/^IPv6:/i.test(inner)) {
      return isIp(inner.slice(5)) && inner.slice(5).includes(":") ? undefined : "bad IPv6 literal";
    }
    return /^\d+\.\d+\.\d+\.\d+$/.test(inner) && isIp(inner) ? undefined : "bad address literal";
  }
  const name = domain.endsWith(".") ? domain.slice(0, -1) : domain;
  for (const label of name.split(".")) {
    if (!LABEL.test(label) || label.length > 63) return "bad domain";
  }
  return undefined;
}

/** Parses `local@domain` (local may be a quoted string); throws a 501 SmtpError on bad syntax. */
export function parseMailbox(text: string, utf8: boolean): Mailbox {
  let local: string;
  let rest: string;
  if (text.startsWith('"')) {
    let i = 1;
    let out = "";
    for (; i < text.length; i++) {
      const c = text[i];
      if (c === "\\") {
        const n = text[i + 1];
        if (n === undefined || n < " " || n > "~") throw syntax("Bad quoted local part");
        out += n;
        i++;
      } else if (c === '"') break;
      // Non-ASCII is checked below with the rest of the address (553 5.6.7 without SMTPUTF8).
      else if (c < " " || c === "\x7f") throw syntax("Bad character in local part");
      else out += c;
    }
    if (text[i] !== '"') throw syntax("Unterminated quoted local part");
    local = out;
    rest = text.slice(i + 1);
    if (!rest.startsWith("@")) throw syntax("Missing domain");
  } else {
    const at = text.lastIndexOf("@");
    if (at <= 0) throw syntax(at === 0 ? "Empty local part" : "Missing domain");
    local = text.slice(0, at);
    rest = text.slice(at);
    if (local.split(".").some((atom) => !ATEXT.test(atom))) throw syntax("Bad local part");
  }
  const domain = rest.slice(1);
  if (!utf8 && (/[^\x00-\x7f]/.test(local) || /[^\x00-\x7f]/.test(domain))) {
    throw new SmtpError(553, "5.6.7", "Non-ASCII address needs SMTPUTF8");
  }
  if (utf8Length(local) > 64) throw new SmtpError(501, "5.1.3", "Local part too long");
  const bad = checkDomain(domain);
  if (bad) throw syntax(`Bad address: ${bad}`);
  return { local, domain };
}

/** Renders a mailbox back to `local@domain`, quoting the local part when it needs it. */
export function formatMailbox(m: Mailbox): string {
  const dotAtom = m.local.split(".").every((a) => ATEXT.test(a));
  const local = dotAtom ? m.local : '"' + m.local.replace(/(["\\])/g, "\\$1") + '"';
  return `${local}@${m.domain}`;
}

/**
 * Parses the argument of MAIL (`FROM:<path> params`) or RCPT (`TO:<path> params`).
 * Spaces after the colon are tolerated; a path without angle brackets is not (501).
 */
export function parsePathArg(arg: string, kind: "MAIL" | "RCPT", utf8Hint = true): PathArg {
  const prefix = kind === "MAIL" ? /^FROM:\s*/i : /^TO:\s*/i;
  const p = prefix.exec(arg);
  if (!p) {
    throw new SmtpError(
      501,
      "5.5.4",
      kind === "MAIL" ? "Syntax: MAIL FROM:<address>" : "Syntax: RCPT TO:<address>",
    );
  }
  const rest = arg.slice(p[0].length);
  if (!rest.startsWith("<")) throw new SmtpError(501, "5.5.4", "Address must be in angle brackets");
  // Find the closing bracket outside a quoted string.
  let end = -1;
  let quoted = false;
  for (let i = 1; i < rest.length; i++) {
    const c = rest[i];
    if (quoted && c === "\\") i++;
    else if (c === '"') quoted = !quoted;
    else if (!quoted && c === ">") {
      end = i;
      break;
    }
  }
  if (end < 0) throw new SmtpError(501, "5.5.4", "Missing closing angle bracket");
  let inner = rest.slice(1, end);
  const params = parseParams(rest.slice(end + 1));
  if (utf8Length(inner) > 256) throw new SmtpError(501, "5.1.3", "Path too long");
  let sourceRoute = false;
  if (inner.startsWith("@")) {
    const colon = inner.indexOf(":");
    if (colon < 0) throw syntax("Bad source route");
    for (const hop of inner.slice(0, colon).split(",")) {
      if (!hop.startsWith("@") || checkDomain(hop.slice(1))) throw syntax("Bad source route");
    }
    inner = inner.slice(colon + 1);
    sourceRoute = true;
  }
  if (inner === "") {
    if (kind === "RCPT" || sourceRoute) throw syntax("Empty address");
    return { address: "", sourceRoute, params };
  }
  const utf8 = utf8Hint || params.has("SMTPUTF8");
  // A postmaster recipient without domain is allowed by RFC 5321 4.5.1.
  if (kind === "RCPT" && /^postmaster$/i.test(inner)) {
    return { address: "postmaster", mailbox: { local: "postmaster", domain: "" }, sourceRoute, params };
  }
  const mailbox = parseMailbox(inner, utf8);
  return { address: formatMailbox(mailbox), mailbox, sourceRoute, params };
}

/** Parses ` KEY=VALUE KEY2` parameters; duplicate or malformed ones are a 501. */
export function parseParams(text: string): Map<string, string | undefined> {
  const params = new Map<string, string | undefined>();
  const trimmed = text.trim();
  if (trimmed === "") return params;
  if (!/^\s/.test(text)) {
    throw new SmtpError(501, "5.5.4", "Parameters must follow the address after a space");
  }
  for (const item of trimmed.split(/ +/)) {
    const eq = item.indexOf("=");
    const key = (eq < 0 ? item : item.slice(0, eq)).toUpperCase();
    const value = eq < 0 ? undefined : item.slice(eq + 1);
    if (!/^[A-Z0-9][A-Z0-9-]*$/.test(key)) throw new SmtpError(501, "5.5.4", `Bad parameter "${item}"`);
    if (value !== undefined && !/^[\x21-\x3c\x3e-\x7e\u0080-\uFFFF]+$/u.test(value)) {
      throw new SmtpError(501, "5.5.4", `Bad parameter value for ${key}`);
    }
    if (params.has(key)) throw new SmtpError(501, "5.5.4", `Duplicate parameter ${key}`);
    params.set(key, value);
  }
  return params;
}
