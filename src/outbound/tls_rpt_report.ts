/**
 * TLS-RPT report documents (pure; RFC 8460): the `_smtp._tls` TXT record and its `rua` list (§3), the
 * report's file name (§5.1), and the report message for a `mailto:` destination (§5.3: multipart/report with
 * report-type=tlsrpt, the gzip'd JSON as an application/tlsrpt+gzip part, TLS-Report-Domain and
 * TLS-Report-Submitter fields; `TLS-Required: No` (RFC 8689 §5) so that a TLS failure cannot stop it).
 */

/** The envelope kind of a report message (its own delivery is not recorded for TLS-RPT, §5.3). */
export const TLS_RPT_KIND_PREFIX = "TLS-RPT report";

/** One report destination from `rua`. */
export type TlsRptUri = { kind: "mailto"; uri: string; address: string } | {
  kind: "https";
  uri: string;
  url: URL;
};

/**
 * The destinations of the one `v=TLSRPTv1` record among `records` (§3: records that do not start with it are
 * ignored; none or more than one means the domain does not take reports), or undefined.
 */
export function parseTlsRptRecord(records: readonly string[]): TlsRptUri[] | undefined {
  const ours = records.filter((r) => /^v=TLSRPTv1\s*(;|$)/.test(r.trim()));
  if (ours.length !== 1) return undefined;
  const fields = new Map<string, string>();
  for (const part of ours[0].split(";")) {
    const eq = part.indexOf("=");
    if (eq <= 0) continue;
    const key = part.slice(0, eq).trim().toLowerCase();
    if (!fields.has(key)) fields.set(key, part.slice(eq + 1).trim());
  }
  const rua = fields.get("rua");
  if (rua === undefined) return undefined;
  const out: TlsRptUri[] = [];
  for (const raw of rua.split(",")) {
    const uri = raw.trim();
    const mailto = /^mailto:([^?]+)/i.exec(uri);
    if (mailto) {
      let address: string;
      try {
        address = decodeURIComponent(mailto[1]);
      } catch {
        continue;
      }
      if (/^[^\s@<>]+@[^\s@<>]+$/.test(address)) out.push({ kind: "mailto", uri, address });
      continue;
    }
    if (/^https:/i.test(uri)) {
      try {
        out.push({ kind: "https", uri, url: new URL(uri) });
      } catch { /* not a URL: skipped */ }
    }
  }
  return out;
}

/** Seconds since the epoch of `day`'s start (YYYY-MM-DD, UTC). */
export function dayStart(day: string): number {
  return Date.parse(`${day}T00:00:00Z`) / 1000;
}

/** §5.1: `sender!policy-domain!begin-timestamp!end-timestamp.json.gz`. */
export function reportFileName(submitter: string, domain: string, day: string): string {
  const begin = dayStart(day);
  return `${submitter}!${domain}!${begin}!${begin + 86_399}.json.gz`;
}

function wrap76(b64: string): string {
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 76) lines.push(b64.slice(i, i + 76));
  return lines.join("\r\n");
}

/** What a report message needs. */
export interface ReportMessageOptions {
  from: string;
  to: string;
  /** The policy domain */
  domain: string;
  /** The reporting organisation's domain (TLS-Report-Submitter) */
  submitter: string;
  organizationName: string;
  reportId: string;
  day: string;
  gz: Uint8Array;
  date: Date;
  messageId: string;
}

/** §5.3: the report as a mail message (CRLF line ends, 7-bit). */
export function reportMessage(o: ReportMessageOptions): Uint8Array {
  const boundary = `tlsrpt-${crypto.randomUUID()}`;
  const file = reportFileName(o.submitter, o.domain, o.day);
  const text = [
    `From: ${o.from}`,
    `To: ${o.to}`,
    `Date: ${o.date.toUTCString().replace("GMT", "+0000")}`,
    `Message-ID: <${o.messageId}>`,
    `Subject: Report Domain: ${o.domain} Submitter: ${o.submitter} Report-ID: <${o.reportId}>`,
    `TLS-Report-Domain: ${o.domain}`,
    `TLS-Report-Submitter: ${o.submitter}`,
    `TLS-Required: No`,
    `Auto-Submitted: auto-generated`,
    `MIME-Version: 1.0`,
    `Content-Type: multipart/report; report-type="tlsrpt"; boundary="${boundary}"`,
    ``,
    `This is a multipart message in MIME format.`,
    ``,
    `--${boundary}`,
    `Content-Type: text/plain; charset=us-ascii`,
    `Content-Transfer-Encoding: 7bit`,
    ``,
    `This is an aggregate TLS report (RFC 8460) from ${o.organizationName} for ${o.domain},`,
    `covering ${o.day} 00:00:00 to 23:59:59 UTC.`,
    ``,
    `--${boundary}`,
    `Content-Type: application/tlsrpt+gzip; name="${file}"`,
    `Content-Transfer-Encoding: base64`,
    `Content-Disposition: attachment; filename="${file}"`,
    ``,
    wrap76(o.gz.toBase64()),
    `--${boundary}--`,
    ``,
  ].join("\r\n");
  return new TextEncoder().encode(text);
}
