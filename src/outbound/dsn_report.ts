/**
 * Delivery status notifications: RFC 3464 (message/delivery-status), RFC 3462/6522 (multipart/report),
 * RFC 3461 NOTIFY/RET semantics, RFC 6533 (message/global-delivery-status when addresses are UTF-8), RFC 8689
 * §5 (a report on a REQUIRETLS message returns only the header, whatever RET says).
 * Trusts nothing it embeds: recipient addresses, ORCPT values and remote diagnostics may hold anything,
 * so every header field is stripped of controls and folded to stay within 998 octets per line.
 */

import type { Envelope, Recipient } from "../core/envelope.ts";
import { encodeXtext } from "../smtp/xtext.ts";

/** Which notice a report is. */
export type DsnKind = "failure" | "delay" | "success";

/** One recipient's entry in a report. */
export interface DsnRecipient {
  recipient: Recipient;
  action: "failed" | "delayed" | "delivered" | "relayed" | "expanded";
  /** RFC 3463 status, e.g. "5.1.1". */
  status: string;
  /** The host that answered, e.g. "mx.example.com". */
  remoteMta?: string;
  /** The remote diagnostic, with its type: "smtp; 550 5.1.1 No such user". */
  diagnostic?: string;
  lastAttempt?: Date;
  /** For delays: when retrying stops. */
  willRetryUntil?: Date;
}

/** What `buildDsn` needs. */
export interface DsnOptions {
  kind: DsnKind;
  /** Name of this MTA, as in Reporting-MTA and the From address. */
  reportingMta: string;
  envelope: Envelope;
  recipients: DsnRecipient[];
  /** The original message, header and body, CRLF line ends. */
  original: Uint8Array;
  now?: Date;
  /** Message-ID of the report, without angle brackets; one is made up when absent. */
  messageId?: string;
  /** Above this size only the original's header is returned (default 10 MiB). */
  returnSizeLimit?: number;
}

/**
 * RFC 3461 NOTIFY semantics: never for the null sender or NOTIFY=NEVER; without NOTIFY, failures and delays
 * only; with NOTIFY, exactly the kinds asked for (SUCCESS only when requested).
 */
export function shouldSendDsn(envelope: Envelope, recipient: Recipient, kind: DsnKind): boolean {
  if (envelope.sender === "") return false;
  const notify = (recipient.notify ?? []).map((w) => w.toUpperCase());
  if (notify.includes("NEVER")) return false;
  if (notify.length === 0) return kind !== "success";
  return notify.includes(kind.toUpperCase());
}

const SUBJECTS: Record<DsnKind, string> = {
  failure: "Undelivered Mail Returned to Sender",
  delay: "Delayed Mail (still being retried)",
  success: "Successful Mail Delivery Report",
};

const enc = new TextEncoder();
// deno-lint-ignore no-control-regex
const NON_ASCII = /[^\x00-\x7f]/;
// deno-lint-ignore no-control-regex
const CONTROLS = /[\x00-\x1f\x7f]/g;

/**
 * Builds a complete report message. The original is returned whole for RET=FULL, and by default for
 * failures; only its header for RET=HDRS, by default for delays and successes, and when it is larger
 * than `returnSizeLimit` or cannot be carried unchanged (NUL bytes or lines over 998 octets). A REQUIRETLS
 * message is reported as for RET=HDRS (RFC 8689 §5): its body must not travel where TLS is not assured.
 */
export function buildDsn(opts: DsnOptions): Uint8Array {
  const { envelope: env, kind } = opts;
  const now = opts.now ?? new Date();
  const mta = clean(opts.reportingMta);
  const global = env.smtputf8 === true || NON_ASCII.test(env.sender) ||
    opts.recipients.some((r) =>
      NON_ASCII.test(r.recipient.address) || NON_ASCII.test(r.recipient.orcpt?.address ?? "")
    );
  // Memory in proportion to what the report returns: only the header section is copied when only the
  // header goes back, and a message that already has CRLF line ends is not copied at all.
  const limit = opts.returnSizeLimit ?? 10 * 1024 * 1024;
  const ret = env.requireTls === true ? "HDRS" : (env.ret ?? (kind === "failure" ? "FULL" : "HDRS"));
  const wantFull = ret === "FULL" &&
    opts.original.length <= limit && carriable(opts.original);
  const whole = wantFull ? crlf(opts.original) : undefined;
  const full = whole !== undefined && whole.length <= limit;
  const returned = full ? whole : headerOf(crlf(headerPart(opts.original)));
  const boundary = makeBoundary(returned);
  const messageId = clean(opts.messageId ?? `${now.getTime().toString(36)}.${randomHex(8)}@${mta}`);

  const head = [
    field("From", `Mail Delivery System <MAILER-DAEMON@${mta}>`),
    field("To", `<${clean(env.sender)}>`),
    field("Subject", SUBJECTS[kind]),
    field("Date", rfc5322Date(now)),
    field("Message-ID", `<${messageId}>`),
    field("Auto-Submitted", "auto-replied"),
    field("MIME-Version", "1.0"),
    field("Content-Type", `multipart/report; report-type=${global ? "global-" : ""}delivery-status;`) +
    `\t boundary="${boundary}"\r\n`,
  ].join("");

  const human = humanText(opts, mta, full);
  const perMessage = [
    field("Reporting-MTA", `dns; ${mta}`),
    env.envid !== undefined ? field("Original-Envelope-Id", safeValue(env.envid)) : "",
    field("Arrival-Date", rfc5322Date(new Date(env.receivedAt))),
  ].join("");
  const perRecipient = opts.recipients.map((r) => {
    const o = r.recipient.orcpt;
    return [
      o ? field("Original-Recipient", `${clean(o.type)}; ${safeValue(o.address)}`) : "",
      field(
        "Final-Recipient",
        `${NON_ASCII.test(r.recipient.address) ? "utf-8" : "rfc822"}; ${clean(r.recipient.address)}`,
      ),
      field("Action", r.action),
      field("Status", clean(r.status)),
      r.remoteMta ? field("Remote-MTA", `dns; ${clean(r.remoteMta)}`) : "",
      r.diagnostic ? field("Diagnostic-Code", clean(r.diagnostic)) : "",
      r.lastAttempt ? field("Last-Attempt-Date", rfc5322Date(r.lastAttempt)) : "",
      r.action === "delayed" && r.willRetryUntil
        ? field("Will-Retry-Until", rfc5322Date(r.willRetryUntil))
        : "",
    ].join("");
  });

  const partType = full
    ? (global ? "message/global" : "message/rfc822")
    : (global ? "message/global-headers" : "text/rfc822-headers");
  const text = head + "\r\n" +
    "This is a MIME-encapsulated message.\r\n\r\n" +
    `--${boundary}\r\n` +
    field("Content-Description", "Notification") +
    field("Content-Type", "text/plain; charset=utf-8") +
    field("Content-Transfer-Encoding", NON_ASCII.test(human) ? "8bit" : "7bit") + "\r\n" +
    human + "\r\n" +
    `--${boundary}\r\n` +
    field("Content-Description", "Delivery report") +
    field("Content-Type", global ? "message/global-delivery-status" : "message/delivery-status") +
    (global ? field("Content-Transfer-Encoding", "8bit") : "") + "\r\n" +
    [perMessage, ...perRecipient].join("\r\n") + "\r\n" +
    `--${boundary}\r\n` +
    field("Content-Description", full ? "Undelivered message" : "Message headers") +
    field("Content-Type", partType) +
    field("Content-Transfer-Encoding", returned.some((b) => b >= 0x80) ? "8bit" : "7bit") + "\r\n";
  const tail = enc.encode(`\r\n--${boundary}--\r\n`);
  const headBytes = enc.encode(text);
  const out = new Uint8Array(headBytes.length + returned.length + tail.length);
  out.set(headBytes);
  out.set(returned, headBytes.length);
  out.set(tail, headBytes.length + returned.length);
  return out;
}

function humanText(opts: DsnOptions, mta: string, full: boolean): string {
  const intro: Record<DsnKind, string> = {
    failure: `This is the mail system at host ${mta}.\r\n\r\n` +
      "Your message could not be delivered to one or more recipients. " +
      (full ? "It is attached below.\r\n" : "Its header is attached below.\r\n"),
    delay: `This is the mail system at host ${mta}.\r\n\r\n` +
      "Your message could not be delivered yet to one or more recipients. Delivery will be retried;\r\n" +
      "you do not need to send it again.\r\n",
    success: `This is the mail system at host ${mta}.\r\n\r\n` +
      "Your message was delivered to the recipients below.\r\n",
  };
  const lines = opts.recipients.map((r) => {
    const why = r.diagnostic ? `: ${clean(r.diagnostic)}` : "";
    const until = r.willRetryUntil ? ` (will retry until ${rfc5322Date(r.willRetryUntil)})` : "";
    return wrap(`<${clean(r.recipient.address)}> ${r.action} (${clean(r.status)})${why}${until}`);
  });
  return intro[opts.kind] + "\r\n" + lines.join("\r\n") + "\r\n";
}

/** Removes controls (CR, LF, TAB, ...) so a value cannot start a new header line. */
function clean(s: string): string {
  return s.replace(CONTROLS, " ");
}

/** An xtext-decoded value that held controls goes back to xtext rather than lose characters. */
function safeValue(s: string): string {
  // deno-lint-ignore no-control-regex
  return /[\x00-\x1f\x7f]/.test(s) ? encodeXtext(s) : s;
}

/** A header field folded at spaces near 78 columns; an unbreakable run is cut at 990 octets. */
function field(name: string, value: string): string {
  const words = `${name}: ${value}`.split(" ");
  const lines: string[] = [];
  let cur = "";
  for (let w of words) {
    if (enc.encode(w).length > 980) w = w.slice(0, 980);
    if (cur && cur.length + 1 + w.length > 78) {
      lines.push(cur);
      cur = "\t" + w;
    } else {
      cur = cur ? `${cur} ${w}` : w;
    }
  }
  lines.push(cur);
  return lines.join("\r\n") + "\r\n";
}

function wrap(s: string): string {
  return field("", s).slice(2).replace(/\r\n\t/g, "\r\n    ").replace(/\r\n$/, "");
}

/** The data with CRLF line ends; the data itself (no copy) when it has them already. */
function crlf(data: Uint8Array): Uint8Array {
  let extra = 0;
  for (let i = 0; i < data.length; i++) {
    const b = data[i];
    if ((b === 0x0a && data[i - 1] !== 0x0d) || (b === 0x0d && data[i + 1] !== 0x0a)) extra++;
  }
  const last = data[data.length - 1];
  const end = data.length > 0 && last !== 0x0a && last !== 0x0d ? 2 : 0;
  if (extra === 0 && end === 0) return data;
  const out = new Uint8Array(data.length + extra + end);
  let o = 0;
  for (let i = 0; i < data.length; i++) {
    const b = data[i];
    if (b === 0x0a && data[i - 1] !== 0x0d) out[o++] = 0x0d;
    out[o++] = b;
    if (b === 0x0d && data[i + 1] !== 0x0a) out[o++] = 0x0a;
  }
  if (end) {
    out[o++] = 0x0d;
    out[o++] = 0x0a;
  }
  return out;
}

/** The raw data up to and including the empty line that ends its header (all of it when there is none). */
function headerPart(data: Uint8Array): Uint8Array {
  for (let i = 0; i < data.length; i++) {
    if (data[i] !== 0x0a) continue;
    if (data[i + 1] === 0x0a) return data.subarray(0, i + 2);
    if (data[i + 1] === 0x0d && data[i + 2] === 0x0a) return data.subarray(0, i + 3);
  }
  if (data[0] === 0x0a || (data[0] === 0x0d && data[1] === 0x0a)) return data.subarray(0, 0);
  return data;
}

function carriable(data: Uint8Array): boolean {
  let len = 0;
  for (const b of data) {
    if (b === 0) return false;
    len = b === 0x0a ? 0 : len + 1;
    if (len > 999) return false;
  }
  return true;
}

function headerOf(data: Uint8Array): Uint8Array {
  for (let i = 0; i + 3 < data.length; i++) {
    if (data[i] === 0x0d && data[i + 1] === 0x0a && data[i + 2] === 0x0d && data[i + 3] === 0x0a) {
      return data.slice(0, i + 2);
    }
  }
  if (data[0] === 0x0d && data[1] === 0x0a) return new Uint8Array(0);
  return data;
}

function makeBoundary(body: Uint8Array): string {
  const text = new TextDecoder("latin1").decode(body);
  for (;;) {
    const b = `=_ferry_${randomHex(12)}`;
    if (!text.includes(b)) return b;
  }
}

function randomHex(n: number): string {
  return crypto.getRandomValues(new Uint8Array(n)).toHex();
}

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** RFC 5322 date-time in UTC: `Thu, 01 Jan 2026 00:00:00 +0000`. */
function rfc5322Date(d: Date): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${DAYS[d.getUTCDay()]}, ${p(d.getUTCDate())} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ` +
    `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} +0000`;
}
