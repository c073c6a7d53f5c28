/**
 * TLS-RPT results (RFC 8460 §4): per policy domain and UTC day, the sessions that succeeded and those that
 * failed with the RFC's result types, kept durably in a JSON file (replaced atomically), and the report
 * (§4.3 JSON, gzip'd) built from them. Sending the reports (mailto/https) is not part of this file.
 */

import { writeAtomic } from "../../core/atomic_file.ts";

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

/** One session's outcome. */
export interface TlsRptEvent {
  /** The recipient (policy) domain */
  domain: string;
  /** "sts", "tlsa" or "no-policy-found" */
  policyType: "sts" | "tlsa" | "no-policy-found";
  /** The MX host tried */
  mxHost: string;
  /** Its address */
  receivingIp: string;
  /** Undefined for a success */
  failure?: TlsRptResultType;
  /** When (ms since epoch; default now) */
  at?: number;
}

interface DayRecord {
  policyType: TlsRptEvent["policyType"];
  success: number;
  failures: Record<string, { resultType: string; mxHost: string; receivingIp: string; count: number }>;
}

/** Maps a host error's text to the RFC 8460 result type it reports. */
export function resultTypeOf(message: string): TlsRptResultType {
  if (/STARTTLS not offered/i.test(message)) return "starttls-not-supported";
  if (/TLSA lookup .* failed|not DNSSEC-validated/i.test(message)) return "dnssec-invalid";
  if (/^dane: required/i.test(message)) return "dane-required";
  if (/does not match/i.test(message)) return "certificate-host-mismatch";
  if (/expired/i.test(message)) return "certificate-expired";
  if (/issuer|self.signed|not trusted|unable to get/i.test(message)) return "certificate-not-trusted";
  return "validation-failure";
}

/** The UTC day of `ms` as YYYY-MM-DD. */
function dayOf(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

/** Durable per-day, per-domain TLS results. */
export class TlsRptStore {
  #file?: string;
  /** day → domain → record */
  #days: Record<string, Record<string, DayRecord>> = {};
  #writing: Promise<void> = Promise.resolve();

  /** Loads `file` when it exists. */
  constructor(file?: string) {
    this.#file = file;
    if (!file) return;
    try {
      this.#days = JSON.parse(Deno.readTextFileSync(file));
    } catch { /* none yet */ }
  }

  /** Records one session outcome and persists it. */
  record(e: TlsRptEvent): Promise<void> {
    const day = dayOf(e.at ?? Date.now());
    const domains = this.#days[day] ??= {};
    const r = domains[e.domain] ??= { policyType: e.policyType, success: 0, failures: {} };
    if (e.policyType !== "no-policy-found") r.policyType = e.policyType;
    if (!e.failure) r.success++;
    else {
      const key = `${e.failure}|${e.mxHost}|${e.receivingIp}`;
      (r.failures[key] ??= { resultType: e.failure, mxHost: e.mxHost, receivingIp: e.receivingIp, count: 0 })
        .count++;
    }
    return this.#persist();
  }

  /** Days with results, oldest first. */
  days(): string[] {
    return Object.keys(this.#days).sort();
  }

  /** Domains with results on `day`. */
  domains(day: string): string[] {
    return Object.keys(this.#days[day] ?? {}).sort();
  }

  /** Forgets a day (after its reports went out). */
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
    const failures = Object.values(r?.failures ?? {});
    return {
      "organization-name": org.organizationName,
      "date-range": { "start-datetime": `${day}T00:00:00Z`, "end-datetime": `${day}T23:59:59Z` },
      "contact-info": org.contactInfo,
      "report-id": org.reportId,
      policies: [{
        policy: { "policy-type": r?.policyType ?? "no-policy-found", "policy-domain": domain },
        summary: {
          "total-successful-session-count": r?.success ?? 0,
          "total-failure-session-count": failures.reduce((n, f) => n + f.count, 0),
        },
        "failure-details": failures.map((f) => ({
          "result-type": f.resultType,
          "receiving-mx-hostname": f.mxHost,
          "receiving-ip": f.receivingIp,
          "failed-session-count": f.count,
        })),
      }],
    };
  }

  #persist(): Promise<void> {
    const file = this.#file;
    if (!file) return Promise.resolve();
    const text = JSON.stringify(this.#days);
    this.#writing = this.#writing.then(() => writeAtomic(file, new TextEncoder().encode(text))).catch(
      () => {},
    );
    return this.#writing;
  }
}

/** The report as `application/tlsrpt+gzip` bytes (RFC 8460 §5.3). */
export async function gzipReport(report: Record<string, unknown>): Promise<Uint8Array> {
  const stream = new Blob([JSON.stringify(report)]).stream().pipeThrough(new CompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}
