/**
 * What the client sends for one transaction and the MAIL/RCPT commands built from it: SIZE (RFC 1870),
 * BODY (RFC 6152, RFC 3030), SMTPUTF8 (RFC 6531), RET/ENVID/NOTIFY/ORCPT (RFC 3461, xtext per section 4),
 * PRDR (draft-hall-prdr). Checks before anything is sent that the peer can take the message unchanged,
 * and that no address or parameter can break the command line (CR, LF, controls).
 */

import { SmtpClientError } from "./client_error.ts";
import type { Capabilities } from "./client_capabilities.ts";
import { encodeXtext } from "./xtext.ts";

/** One recipient of a transaction with its RFC 3461 parameters. */
export interface OutboundRecipient {
  /** Forward path without angle brackets. */
  address: string;
  /** NOTIFY keywords (NEVER, or any of SUCCESS, FAILURE, DELAY). */
  notify?: string[];
  /** ORCPT with the address decoded; it is xtext-encoded on the wire. */
  orcpt?: { type: string; address: string };
}

/** One transaction: reverse path, recipients and message parameters. */
export interface OutboundEnvelope {
  /** Reverse path without angle brackets; "" is the null sender. */
  from: string;
  recipients: OutboundRecipient[];
  ret?: "FULL" | "HDRS";
  /** ENVID, decoded; it is xtext-encoded on the wire. */
  envid?: string;
  body?: "7BIT" | "8BITMIME" | "BINARYMIME";
  /** The message needs SMTPUTF8 (also implied by a non-ASCII address). */
  smtputf8?: boolean;
  /** REQUIRETLS (RFC 8689): the peer must offer it, and the parameter is passed on */
  requireTls?: boolean;
  /** Message size in octets, sent as SIZE= and checked against the peer's limit. */
  size: number;
  /** Ask for per-recipient data replies when the peer offers PRDR. */
  prdr?: boolean;
}

/** The extensions a transaction will use with a given peer. */
export interface TransactionPlan {
  mail: string;
  rcpts: string[];
  /** DSN parameters were sent (the peer offers DSN). */
  dsn: boolean;
  prdr: boolean;
  /** BDAT will be used (CHUNKING offered, or BINARYMIME required). */
  bdat: boolean;
}

// deno-lint-ignore no-control-regex
const CONTROL = /[\x00-\x1f\x7f]/;
// deno-lint-ignore no-control-regex
const NON_ASCII = /[^\x00-\x7f]/;
const NOTIFY_WORDS = new Set(["NEVER", "SUCCESS", "FAILURE", "DELAY"]);

function local(code: number, enhanced: string, text: string): SmtpClientError {
  return new SmtpClientError("mail", "local", { code, enhanced, lines: [text] });
}

/**
 * Builds the MAIL and RCPT commands for `env` against a peer offering `caps`; throws a permanent
 * `SmtpClientError` (stage "mail", kind "local") when the message cannot go to this peer unchanged.
 */
export function planTransaction(env: OutboundEnvelope, caps: Capabilities): TransactionPlan {
  if (env.recipients.length === 0) throw local(554, "5.5.1", "No recipients");
  for (const a of [env.from, ...env.recipients.map((r) => r.address)]) {
    if (CONTROL.test(a) || /[<>]/.test(a)) throw local(501, "5.1.7", `Invalid address "${a.slice(0, 100)}"`);
  }
  if (!Number.isSafeInteger(env.size) || env.size < 0) throw local(554, "5.3.4", `Invalid size ${env.size}`);
  if (caps.sizeLimit !== undefined && env.size > caps.sizeLimit) {
    throw local(552, "5.3.4", `Message size ${env.size} exceeds the peer's limit of ${caps.sizeLimit}`);
  }
  const needsUtf8 = env.smtputf8 === true ||
    [env.from, ...env.recipients.map((r) => r.address)].some((a) => NON_ASCII.test(a));
  if (needsUtf8 && !caps.smtpUtf8) {
    throw local(553, "5.6.7", "Message needs SMTPUTF8, which the peer does not offer");
  }
  if (env.body === "8BITMIME" && !caps.eightBitMime) {
    throw local(554, "5.6.3", "Message needs 8BITMIME, which the peer does not offer");
  }
  if (env.body === "BINARYMIME" && !(caps.binaryMime && caps.chunking)) {
    throw local(554, "5.6.3", "Message needs BINARYMIME and CHUNKING, which the peer does not offer");
  }

  if (env.requireTls && !caps.requireTls) {
    throw local(550, "5.7.10", "REQUIRETLS needed but not offered by the peer");
  }

  const prdr = env.prdr === true && caps.prdr;
  const mailParams: string[] = [];
  if (caps.size) mailParams.push(`SIZE=${env.size}`);
  if (env.body && env.body !== "7BIT" && caps.esmtp) mailParams.push(`BODY=${env.body}`);
  if (needsUtf8) mailParams.push("SMTPUTF8");
  if (caps.dsn) {
    if (env.ret) mailParams.push(`RET=${env.ret}`);
    if (env.envid !== undefined) mailParams.push(`ENVID=${encodeXtext(env.envid)}`);
  }
  if (prdr) mailParams.push("PRDR");
  if (env.requireTls) mailParams.push("REQUIRETLS");

  const rcpts = env.recipients.map((r) => {
    const params: string[] = [];
    if (caps.dsn && r.notify?.length) {
      const words = r.notify.map((w) => w.toUpperCase());
      if (!words.every((w) => NOTIFY_WORDS.has(w)) || (words.includes("NEVER") && words.length > 1)) {
        throw local(501, "5.5.4", `Invalid NOTIFY "${r.notify.join(",")}"`);
      }
      params.push(`NOTIFY=${words.join(",")}`);
    }
    if (caps.dsn && r.orcpt) {
      if (!/^[A-Za-z0-9][A-Za-z0-9-]*$/.test(r.orcpt.type)) {
        throw local(501, "5.5.4", `Invalid ORCPT type "${r.orcpt.type.slice(0, 40)}"`);
      }
      params.push(`ORCPT=${r.orcpt.type};${encodeXtext(r.orcpt.address)}`);
    }
    return line("RCPT TO", r.address, params);
  });
  return {
    mail: line("MAIL FROM", env.from, mailParams),
    rcpts,
    dsn: caps.dsn,
    prdr,
    bdat: caps.chunking,
  };
}

function line(verb: string, address: string, params: string[]): string {
  return [`${verb}:<${address}>`, ...params].join(" ") + "\r\n";
}
