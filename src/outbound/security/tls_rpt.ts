/**
 * TLS-RPT results (RFC 8460 §4): per policy domain and UTC day, the sessions that succeeded and those that
 * failed with the RFC's result types, grouped by the policy in force (type, policy string, MX patterns), kept
 * durably in a JSON file (replaced atomically), and the report (§4.3 JSON, gzip'd) built from them. The file
 * also records which report destinations a day's report was already handed to, so a restart never sends it
 * twice. Sending is tls_rpt_reporter.ts's job.
 */

import { writeAtomic } from "../../core/atomic_file.ts";
import type { TlsaRecord } from "../../dns/resolver.ts";

/** RFC 8460 §4.3 result types. */
export type TlsRptResultType =
  | "starttls-not-supported"
  | "certificate-host-mismatch"
  | "certificate-expired"
  | "certificate-not-trusted"
  | "validation-failure"
  | "tlsa-invalid"
  | "dnssec-invalid"
  | "dane-required"
  | "sts-policy-fetch-error"
  | "sts-policy-invalid"
  | "sts-webpki-invalid";

/** The policy a session ran under (RFC 8460 §4.4 `policy`). */
export interface TlsRptPolicy {
  /** "sts", "tlsa" or "no-policy-found" */
  policyType: "sts" | "tlsa" | "no-policy-found";
  /** The policy as the report shows it: the MTA-STS policy's lines, or the TLSA records */
  policyString?: string[];
  /** MTA-STS: the policy's `mx` patterns */
  mxHost?: string[];
}

/** One session's outcome (or, for `sts-policy-*`, one failed policy fetch). */
export interface TlsRptEvent extends TlsRptPolicy {
  /** The recipient (policy) domain */
  domain: string;
  /** The MX host tried (absent for a policy fetch failure) */
  receivingMx?: string;
  /** Its address */
  receivingIp?: string;
  /** Our address on the session */
  sendingIp?: string;
  /** Undefined for a success */
  failure?: TlsRptResultType;
  /** More about a failure (e.g. the error text) */
  detail?: string;
  /** When (ms since epoch; default now) */
  at?: number;
}

interface FailureRecord {
  resultType: string;
  mxHost?: string;
  receivingIp?: string;
  sendingIp?: string;
  detail?: string;
  count: number;
}

interface PolicyRecord {
  policyType: TlsRptPolicy["policyType"];
  policyString?: string[];
  mxHost?: string[];
  success: number;
  failures: Record<string, FailureRecord>;
}

interface DomainRecord {
  /** policy key → counts */
  policies: Record<string, PolicyRecord>;
  /** Report destinations (rua URIs) this day's report already went to */
  sent?: string[];
}

/** Maps a host error's text to the RFC 8460 result type it reports. */
export function resultTypeOf(message: string): TlsRptResultType {
  if (/STARTTLS not offered/i.test(message)) return "starttls-not-supported";
  if (/TLSA lookup .* failed|not DNSSEC-validated/i.test(message)) return "dnssec-invalid";
  if (/^dane: required/i.test(message)) return "dane-required";
  if (/no matching DANE TLSA/i.test(message)) return "tlsa-invalid";
  if (/does not match/i.test(message)) return "certificate-host-mismatch";
  if (/expired/i.test(message)) return "certificate-expired";
  if (/issuer|self.signed|not trusted|unable to get/i.test(message)) return "certificate-not-trusted";
  return "validation-failure";
}

/** The policy description of what DANE or MTA-STS required of a host (RFC 8460 §4.4). */
export function policyOf(
  label: string,
  req: { dane?: { tlsa: TlsaRecord[] }; stsPolicy?: { mode: string; mx: string[]; maxAge: number } },
): TlsRptPolicy {
  if (label.startsWith("dane") && req.dane) {
    return {
      policyType: "tlsa",
      policyString: req.dane.tlsa.map((r) =>
        `${r.usage} ${r.selector} ${r.matchingType} ${r.data.toHex().toUpperCase()}`
      ),
    };
  }
  if (label.startsWith("dane")) return { policyType: "tlsa" };
  if (label.startsWith("mta-sts") && req.stsPolicy) {
    const p = req.stsPolicy;
    return {
      policyType: "sts",
      policyString: [
        "version: STSv1",
        `mode: ${p.mode}`,
        ...p.mx.map((m) => `mx: ${m}`),
        `max_age: ${p.maxAge}`,
      ],
      mxHost: p.mx,
    };
  }
  if (label.startsWith("mta-sts")) return { policyType: "sts" };
  return { policyType: "no-policy-found" };
}

/** The UTC day of `ms` as YYYY-MM-DD. */
export function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** A record written by the first version of this file (one policy per domain). */
interface OldDayRecord {
  policyType: TlsRptPolicy["policyType"];
  success: number;
  failures: Record<string, { resultType: string; mxHost: string; receivingIp: string; count: number }>;
}

function upgrade(r: DomainRecord | OldDayRecord): DomainRecord {
  if ("policies" in r) return r;
  return {
    policies: { [r.policyType]: { policyType: r.policyType, success: r.success, failures: r.failures } },
  };
}

/** Durable per-day, per-domain TLS results. */
export class TlsRptStore {
  #file?: string;
  /** day → domain → record */
  #days: Record<string, Record<string, DomainRecord>> = {};
  #writing: Promise<void> = Promise.resolve();

  /** Loads `file` when it exists. */
  constructor(file?: string) {
    this.#file = file;
    if (!file) return;
    try {
      const data = JSON.parse(Deno.readTextFileSync(file)) as Record<
        string,
        Record<string, DomainRecord | OldDayRecord>
      >;
      for (const [day, domains] of Object.entries(data)) {
        this.#days[day] = {};
        for (const [d, r] of Object.entries(domains)) this.#days[day][d] = upgrade(r);
      }
    } catch { /* none yet */ }
  }

  /** Records one session outcome and persists it (a failed write is not an error of the delivery). */
  record(e: TlsRptEvent): Promise<void> {
    const day = dayOf(e.at ?? Date.now());
    const domains = this.#days[day] ??= {};
    const d = domains[e.domain.toLowerCase()] ??= { policies: {} };
    const key = JSON.stringify([e.policyType, e.policyString ?? []]);
    const p = d.policies[key] ??= {
      policyType: e.policyType,
      ...(e.policyString ? { policyString: e.policyString } : {}),
      ...(e.mxHost ? { mxHost: e.mxHost } : {}),
      success: 0,
      failures: {},
    };
    if (!e.failure) p.success++;
    else {
      const fkey = JSON.stringify([e.failure, e.receivingMx ?? "", e.receivingIp ?? "", e.sendingIp ?? ""]);
      const f = p.failures[fkey] ??= {
        resultType: e.failure,
        ...(e.receivingMx ? { mxHost: e.receivingMx } : {}),
        ...(e.receivingIp ? { receivingIp: e.receivingIp } : {}),
        ...(e.sendingIp ? { sendingIp: e.sendingIp } : {}),
        count: 0,
      };
      if (e.detail && !f.detail) f.detail = e.detail.slice(0, 200);
      f.count++;
    }
    return this.#persist().catch(() => {});
  }

  /** Days with results, oldest first. */
  days(): string[] {
    return Object.keys(this.#days).sort();
  }

  /** Domains with results on `day`. */
  domains(day: string): string[] {
    return Object.keys(this.#days[day] ?? {}).sort();
  }

  /** The report destinations `domain`'s report for `day` was already handed to. */
  sentTo(day: string, domain: string): string[] {
    return [...(this.#days[day]?.[domain]?.sent ?? [])];
  }

  /** Notes (durably, before resolving) that the report for `domain` on `day` was handed to `uri`. */
  markSent(day: string, domain: string, uri: string): Promise<void> {
    const r = this.#days[day]?.[domain];
    if (!r) return Promise.resolve();
    (r.sent ??= []).push(uri);
    return this.#persist();
  }

  /** Forgets `domain`'s results on `day` (its reports went out), and the day when it has no domain left. */
  finish(day: string, domain: string): Promise<void> {
    delete this.#days[day]?.[domain];
    if (this.#days[day] && Object.keys(this.#days[day]).length === 0) delete this.#days[day];
    return this.#persist();
  }

  /** Forgets a whole day. */
  forget(day: string): Promise<void> {
    delete this.#days[day];
    return this.#persist();
  }

  /** The RFC 8460 §4.3 report object for `domain` on `day`. */
  report(
    domain: string,
    day: string,
    org: { organizationName: string; contactInfo: string; reportId: string },
  ): Record<string, unknown> {
    const r = this.#days[day]?.[domain];
    const policies = Object.values(r?.policies ?? {});
    if (policies.length === 0) policies.push({ policyType: "no-policy-found", success: 0, failures: {} });
    return {
      "organization-name": org.organizationName,
      "date-range": { "start-datetime": `${day}T00:00:00Z`, "end-datetime": `${day}T23:59:59Z` },
      "contact-info": org.contactInfo,
      "report-id": org.reportId,
      policies: policies.map((p) => {
        const failures = Object.values(p.failures);
        const policy: Record<string, unknown> = { "policy-type": p.policyType };
        if (p.policyString) policy["policy-string"] = p.policyString;
        policy["policy-domain"] = domain;
        if (p.mxHost) policy["mx-host"] = p.mxHost;
        return {
          policy,
          summary: {
            "total-successful-session-count": p.success,
            "total-failure-session-count": failures.reduce((n, f) => n + f.count, 0),
          },
          "failure-details": failures.map((f) => {
            const o: Record<string, unknown> = { "result-type": f.resultType };
            if (f.sendingIp) o["sending-mta-ip"] = f.sendingIp;
            if (f.mxHost) o["receiving-mx-hostname"] = f.mxHost;
            if (f.receivingIp) o["receiving-ip"] = f.receivingIp;
            o["failed-session-count"] = f.count;
            if (f.detail) o["failure-reason-code"] = f.detail;
            return o;
          }),
        };
      }),
    };
  }

  /** Writes the whole state; resolves when it is on disk, rejects when the write failed. */
  #persist(): Promise<void> {
    const file = this.#file;
    if (!file) return Promise.resolve();
    const text = JSON.stringify(this.#days);
    const write = this.#writing.catch(() => {}).then(() => writeAtomic(file, new TextEncoder().encode(text)));
    this.#writing = write;
    return write;
  }
}

/** The report as `application/tlsrpt+gzip` bytes (RFC 8460 §5.3). */
export async function gzipReport(report: Record<string, unknown>): Promise<Uint8Array> {
  const stream = new Blob([JSON.stringify(report)]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
