/** The Received: trace field in RFC 5321 4.4 form (with RFC 3848 / RFC 6531 protocol names). */

import type { ClientInfo, TlsInfo } from "../core/envelope.ts";

/** What goes into a Received: field. */
export interface ReceivedFacts {
  client: ClientInfo;
  hostname: string;
  protocol: string;
  id: string;
  tls?: TlsInfo;
  sender: string;
  /** Named only when there is exactly one recipient, as most MTAs do for privacy */
  recipients: string[];
  date: Date;
}

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** RFC 5322 date-time, e.g. `Sun, 22 Nov 2026 03:14:09 +0000`. */
export function rfc5322Date(d: Date): string {
  const p = (n: number) => String(n).padStart(2, "0");
  const off = -d.getTimezoneOffset();
  const sign = off >= 0 ? "+" : "-";
  const zone = `${sign}${p(Math.floor(Math.abs(off) / 60))}${p(Math.abs(off) % 60)}`;
  return `${DAYS[d.getDay()]}, ${d.getDate()} ${MONTHS[d.getMonth()]} ${d.getFullYear()} ${p(d.getHours())}:${
    p(d.getMinutes())
  }:${p(d.getSeconds())} ${zone}`;
}

/** Strips characters that could break a header line out of client-supplied text. */
function clean(s: string): string {
  return s.replace(/[\x00-\x1f\x7f()\\;]/g, "?");
}

/**
 * The client certificate's subject as Exim logs it (` CV=yes DN="/CN=…"`), when the client sent one; the
 * subject is the peer's text, so anything that could end the comment or the line is replaced.
 */
export function tlsPeer(tls: TlsInfo): string {
  if (tls.peerSubject === undefined) return "";
  return ` CV=${tls.peerVerified ? "yes" : "no"} DN="${
    tls.peerSubject.replace(/[\x00-\x1f\x7f()\\;"]/g, "?")
  }"`;
}

/** Builds the field, folded, ending in CRLF. */
export function receivedHeader(f: ReceivedFacts): string {
  const ip = f.client.ip.includes(":") ? `IPv6:${f.client.ip}` : f.client.ip;
  const tcpInfo = `${f.client.name ? clean(f.client.name) + " " : ""}[${ip}]:${f.client.port}`;
  const lines = [
    `Received: from ${clean(f.client.helo ?? "unknown")} (${tcpInfo})`,
    `\tby ${f.hostname} (Ferry) with ${f.protocol.toUpperCase()}` +
    (f.tls ? ` (${f.tls.version}:${f.tls.cipher}:${f.tls.bits}${tlsPeer(f.tls)})` : ""),
    `\tid ${f.id}`,
    `\t(envelope-from <${clean(f.sender)}>)`,
  ];
  if (f.recipients.length === 1) lines.push(`\tfor <${clean(f.recipients[0])}>; ${rfc5322Date(f.date)}`);
  else lines[lines.length - 1] += `; ${rfc5322Date(f.date)}`;
  return lines.join("\r\n") + "\r\n";
}
