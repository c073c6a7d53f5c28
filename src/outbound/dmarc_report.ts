/**
 * DMARC report documents (pure): the aggregate report XML of RFC 7489 appendix C (`<feedback>` without a
 * namespace, as receivers read it; the appendix's schema cannot put it in its target namespace, since its type
 * references are unqualified), its file name (7.2.1.1), the
 * report message carrying it gzip'd (7.2.1.1), the rua/ruf URI list (6.2), and the failure report of
 * RFC 6591 (an ARF message, RFC 5965, with the original header section).
 */

import { gzipSync } from "node:zlib";
import type { DmarcHistoryEntry } from "../policy/dmarc_history.ts";

/** One destination of a rua/ruf tag. */
export interface ReportUri {
  address: string;
  /** Largest report accepted (the `!size` suffix), in octets */
  maxBytes?: number;
}

/** Parses `mailto:a@b.example!10m, mailto:c@d.example` (other schemes are ignored). */
export function parseReportUris(tag: string | undefined): ReportUri[] {
  const out: ReportUri[] = [];
  for (const part of (tag ?? "").split(",")) {
    const m = /^\s*mailto:([^!\s]+@[^!\s]+?)(?:!(\d+)([kmgt]?))?\s*$/i.exec(part);
    if (!m) continue;
    const unit = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[(m[3] ?? "").toLowerCase()] ??
      1;
    out.push({ address: decodeURIComponent(m[1]), maxBytes: m[2] ? Number(m[2]) * unit : undefined });
  }
  return out;
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/** An IPv6 address in the full eight-group form the schema's pattern wants. */
function schemaIp(ip: string): string {
  if (!ip.includes(":")) return ip;
  const [head, tail = ""] = ip.split("::");
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const groups = ip.includes("::") ? [...h, ...Array(8 - h.length - t.length).fill("0"), ...t] : h;
  return groups.join(":");
}

/** What the report is about and who makes it. */
export interface AggregateMeta {
  orgName: string;
  email: string;
  reportId: string;
  /** Seconds since the epoch */
  begin: number;
  end: number;
  policyDomain: string;
  tags: Record<string, string>;
}

const DISPOSITIONS = new Set(["none", "quarantine", "reject"]);
const DKIM_RESULTS = new Set(["none", "pass", "fail", "policy", "neutral", "temperror", "permerror"]);
const SPF_RESULTS = new Set(["none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"]);

/** The aggregate report XML: entries with the same facts become one record with a count. */
export function aggregateXml(meta: AggregateMeta, entries: readonly DmarcHistoryEntry[]): string {
  const groups = new Map<string, { e: DmarcHistoryEntry; count: number }>();
  for (const e of entries) {
    const key = JSON.stringify([
      e.sourceIp,
      e.disposition,
      e.dkimAligned,
      e.spfAligned,
      e.reason,
      e.headerFrom,
      e.envelopeFrom,
      e.envelopeTo,
      e.dkim,
      e.spf,
    ]);
    const g = groups.get(key);
    if (g) g.count++;
    else groups.set(key, { e, count: 1 });
  }
  const t = meta.tags;
  const disp = (v: string | undefined, d: string) => DISPOSITIONS.has(v ?? "") ? v! : d;
  const p = disp(t.p, "none");
  const lines = [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<feedback>`,
    `  <version>1.0</version>`,
    `  <report_metadata>`,
    `    <org_name>${esc(meta.orgName)}</org_name>`,
    `    <email>${esc(meta.email)}</email>`,
    `    <report_id>${esc(meta.reportId)}</report_id>`,
    `    <date_range><begin>${meta.begin}</begin><end>${meta.end}</end></date_range>`,
    `  </report_metadata>`,
    `  <policy_published>`,
    `    <domain>${esc(meta.policyDomain)}</domain>`,
    `    <adkim>${t.adkim === "s" ? "s" : "r"}</adkim>`,
    `    <aspf>${t.aspf === "s" ? "s" : "r"}</aspf>`,
    `    <p>${p}</p>`,
    `    <sp>${disp(t.sp, p)}</sp>`,
    `    <pct>${/^\d+$/.test(t.pct ?? "") ? Number(t.pct) : 100}</pct>`,
    `    <fo>${esc(t.fo ?? "0")}</fo>`,
    `  </policy_published>`,
  ];
  for (const { e, count } of groups.values()) {
    lines.push(
      `  <record>`,
      `    <row>`,
      `      <source_ip>${esc(schemaIp(e.sourceIp))}</source_ip>`,
      `      <count>${count}</count>`,
      `      <policy_evaluated>`,
      `        <disposition>${disp(e.disposition, "none")}</disposition>`,
      `        <dkim>${e.dkimAligned ? "pass" : "fail"}</dkim>`,
      `        <spf>${e.spfAligned ? "pass" : "fail"}</spf>`,
      ...(e.reason ? [`        <reason><type>${esc(e.reason)}</type></reason>`] : []),
      `      </policy_evaluated>`,
      `    </row>`,
      `    <identifiers>`,
      ...(e.envelopeTo ? [`      <envelope_to>${esc(e.envelopeTo)}</envelope_to>`] : []),
      `      <envelope_from>${esc(e.envelopeFrom)}</envelope_from>`,
      `      <header_from>${esc(e.headerFrom)}</header_from>`,
      `    </identifiers>`,
      `    <auth_results>`,
    );
    for (const d of e.dkim) {
      lines.push(
        `      <dkim><domain>${esc(d.domain)}</domain>${
          d.selector ? `<selector>${esc(d.selector)}</selector>` : ""
        }` +
          `<result>${DKIM_RESULTS.has(d.result) ? d.result : "permerror"}</result></dkim>`,
      );
    }
    lines.push(
      `      <spf><domain>${esc(e.spf.domain)}</domain><scope>${e.spf.scope}</scope>` +
        `<result>${SPF_RESULTS.has(e.spf.result) ? e.spf.result : "none"}</result></spf>`,
      `    </auth_results>`,
      `  </record>`,
    );
  }
  lines.push(`</feedback>`, "");
  return lines.join("\n");
}

/** RFC 7489 7.2.1.1: `receiver!policy-domain!begin!end!unique-id.xml.gz`. */
export function reportFileName(receiver: string, meta: AggregateMeta): string {
  return `${receiver}!${meta.policyDomain}!${meta.begin}!${meta.end}!${meta.reportId}.xml.gz`;
}

/** The gzip'd report. */
export function gzipReport(xml: string): Uint8Array {
  return new Uint8Array(gzipSync(new TextEncoder().encode(xml)));
}

function wrap76(b64: string): string {
  return b64.replace(/(.{76})/g, "$1\r\n").replace(/\r\n$/, "");
}

/** The message carrying an aggregate report (RFC 7489 7.2.1.1). */
export function aggregateReportMessage(opts: {
  from: string;
  to: string;
  receiver: string;
  meta: AggregateMeta;
  gz: Uint8Array;
  date: Date;
  messageId: string;
}): Uint8Array {
  const boundary = `dmarc-${opts.meta.reportId}`;
  const file = reportFileName(opts.receiver, opts.meta);
  const text = [
    `From: ${opts.from}`,
    `To: ${opts.to}`,
    `Date: ${opts.date.toUTCString().replace("GMT", "+0000")}`,
    `Message-ID: <${opts.messageId}>`,
    `Subject: Report Domain: ${opts.meta.policyDomain} Submitter: ${opts.receiver} Report-ID: <${opts.meta.reportId}>`,
    `MIME-Version: 1.0`,
    `Content-Type: multipart/mixed; boundary="${boundary}"`,
    ``,
    `--${boundary}`,
    `Content-Type: text/plain; charset=us-ascii`,
    ``,
    `This is an aggregate DMARC report (RFC 7489) for ${opts.meta.policyDomain} from ${opts.receiver}.`,
    ``,
    `--${boundary}`,
    `Content-Type: application/gzip; name="${file}"`,
    `Content-Transfer-Encoding: base64`,
    `Content-Disposition: attachment; filename="${file}"`,
    ``,
    wrap76(opts.gz.toBase64()),
    `--${boundary}--`,
    ``,
  ].join("\r\n");
  return new TextEncoder().encode(text);
}

/** RFC 7489 7.3 fo=: whether a failure report is wanted for this result. */
export function failureWanted(
  fo: string | undefined,
  e: Pick<DmarcHistoryEntry, "dkimAligned" | "spfAligned" | "dkim" | "spf">,
): boolean {
  const opts = (fo ?? "0").split(":").map((s) => s.trim());
  const dkimFailed = e.dkim.length === 0 || e.dkim.some((d) => d.result !== "pass");
  const spfFailed = e.spf.result !== "pass";
  return opts.some((o) =>
    o === "0"
      ? !e.dkimAligned && !e.spfAligned
      : o === "1"
      ? !e.dkimAligned || !e.spfAligned
      : o === "d"
      ? dkimFailed
      : o === "s"
      ? spfFailed
      : false
  );
}

/** An RFC 6591 failure report: the ARF message with the original header section. */
export function failureReportMessage(opts: {
  from: string;
  to: string;
  receiver: string;
  entry: DmarcHistoryEntry;
  authResults: string;
  headers: string;
  date: Date;
  messageId: string;
}): Uint8Array {
  const e = opts.entry;
  const boundary = `dmarc-fail-${opts.messageId.replace(/[^A-Za-z0-9]/g, "")}`;
  const text = [
    `From: ${opts.from}`,
    `To: ${opts.to}`,
    `Date: ${opts.date.toUTCString().replace("GMT", "+0000")}`,
    `Message-ID: <${opts.messageId}>`,
    `Subject: DMARC failure report for ${e.headerFrom} from ${opts.receiver}`,
    `MIME-Version: 1.0`,
    `Content-Type: multipart/report; report-type=feedback-report; boundary="${boundary}"`,
    ``,
    `--${boundary}`,
    `Content-Type: text/plain; charset=us-ascii`,
    ``,
    `A message claiming to be from ${e.headerFrom} failed DMARC at ${opts.receiver}.`,
    ``,
    `--${boundary}`,
    `Content-Type: message/feedback-report`,
    ``,
    `Feedback-Type: auth-failure`,
    `User-Agent: Ferry`,
    `Version: 1`,
    `Auth-Failure: dmarc`,
    `Authentication-Results: ${opts.authResults.replace(/\r?\n[ \t]*/g, " ")}`,
    `Original-Envelope-Id: ${opts.messageId}`,
    `Original-Mail-From: <${e.mailFrom ?? e.envelopeFrom}>`,
    `Arrival-Date: ${new Date(e.at).toUTCString().replace("GMT", "+0000")}`,
    `Reported-Domain: ${e.headerFrom}`,
    `Source-IP: ${e.sourceIp}`,
    `Delivery-Result: ${
      e.disposition === "reject" ? "reject" : e.disposition === "quarantine" ? "spam" : "delivered"
    }`,
    ``,
    `--${boundary}`,
    `Content-Type: text/rfc822-headers`,
    ``,
    opts.headers.replace(/\r?\n$/, ""),
    ``,
    `--${boundary}--`,
    ``,
  ].join("\r\n");
  return new TextEncoder().encode(text);
}
