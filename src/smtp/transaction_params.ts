/**
 * ESMTP parameters of MAIL (SIZE RFC 1870, BODY RFC 6152, SMTPUTF8 RFC 6531, RET/ENVID RFC 3461, PRDR,
 * REQUIRETLS RFC 8689) and
 * RCPT (NOTIFY/ORCPT RFC 3461), checked against the extensions this session offered. Pure, no I/O.
 */

import { SmtpError } from "../core/reply.ts";
import { parseEnvid, parseNotify, parseOrcpt, parseRet } from "./dsn_params.ts";
import type { MailParams, RcptEntry, SessionExtensions } from "./session_types.ts";

/** What MAIL parameters are checked against. */
export interface MailParamOptions {
  extensions: SessionExtensions;
  /** The client said EHLO (parameters need it) */
  esmtp: boolean;
  /** The advertised SIZE limit */
  maxSize: number;
  /** The session is encrypted (REQUIRETLS is offered only then, RFC 8689 §4.1) */
  tls?: boolean;
}

/** Parses MAIL FROM parameters; throws SmtpError (555 unknown or not offered, 501 bad value, 552 too big). */
export function parseMailParams(params: Map<string, string | undefined>, opts: MailParamOptions): MailParams {
  const x = opts.extensions;
  const out: MailParams = { smtputf8: false, prdr: false };
  if (params.size > 0 && !opts.esmtp) throw new SmtpError(555, "5.5.4", "Parameters need EHLO");
  for (const [key, value] of params) {
    switch (key) {
      case "SIZE": {
        if (!value || !/^\d{1,15}$/.test(value)) throw new SmtpError(501, "5.5.4", "Bad SIZE value");
        out.size = Number(value);
        if (out.size > opts.maxSize) {
          throw new SmtpError(552, "5.3.4", "Message size exceeds fixed maximum message size");
        }
        break;
      }
      case "BODY": {
        const v = value?.toUpperCase();
        if (v !== "7BIT" && v !== "8BITMIME") {
          throw new SmtpError(501, "5.5.4", "BODY must be 7BIT or 8BITMIME");
        }
        out.body = v;
        break;
      }
      case "SMTPUTF8":
        if (!x.smtputf8 || value !== undefined) throw new SmtpError(555, "5.5.4", "SMTPUTF8 not accepted");
        out.smtputf8 = true;
        break;
      case "RET":
        if (!x.dsn) throw new SmtpError(555, "5.5.4", "RET not recognised");
        out.ret = parseRet(value);
        break;
      case "ENVID":
        if (!x.dsn) throw new SmtpError(555, "5.5.4", "ENVID not recognised");
        out.envid = parseEnvid(value);
        break;
      case "REQUIRETLS":
        if (!opts.tls || value !== undefined) throw new SmtpError(555, "5.5.4", "REQUIRETLS not recognised");
        out.requireTls = true;
        break;
      case "PRDR":
        if (!x.prdr || value !== undefined) throw new SmtpError(555, "5.5.4", "PRDR not recognised");
        out.prdr = true;
        break;
      default:
        throw new SmtpError(555, "5.5.4", `Parameter ${key} not recognised`);
    }
  }
  return out;
}

/** Parses RCPT TO parameters (NOTIFY, ORCPT, only when DSN was offered); throws SmtpError. */
export function parseRcptParams(
  params: Map<string, string | undefined>,
  extensions: SessionExtensions,
): Pick<RcptEntry, "notify" | "orcpt"> {
  const out: Pick<RcptEntry, "notify" | "orcpt"> = {};
  for (const [key, value] of params) {
    if (key === "NOTIFY" && extensions.dsn) out.notify = parseNotify(value);
    else if (key === "ORCPT" && extensions.dsn) out.orcpt = parseOrcpt(value);
    else throw new SmtpError(555, "5.5.4", `Parameter ${key} not recognised`);
  }
  return out;
}
