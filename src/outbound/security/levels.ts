/**
 * The two levels an outbound delivery must reach (maddy's mxauth model): MX authentication
 * (none < mta-sts < dnssec) and TLS (none < encrypted < authenticated). Policies only raise them or fail the
 * host; nothing lowers them. A `Requirement` is the per-host result the transport enforces.
 */

import type { TlsaRecord } from "../../dns/resolver.ts";
import type { SecurityTrace } from "../../events/types.ts";

export type { SecurityTrace };

/** TLS level: 0 none, 1 encrypted (any STARTTLS), 2 authenticated (DANE or PKIX with the name checked). */
export type TlsLevel = 0 | 1 | 2;
/** MX level: 0 none, 1 the MX name is authenticated by an MTA-STS policy, 2 by DNSSEC. */
export type MxLevel = 0 | 1 | 2;

/** Names of the TLS levels, as logs and events show them. */
export const TLS_LEVEL_NAMES = ["none", "encrypted", "authenticated"] as const;
/** Names of the MX levels, as logs and events show them. */
export const MX_LEVEL_NAMES = ["none", "mta-sts", "dnssec"] as const;

/** DANE parameters for one host (RFC 7672 §2.2, §3). */
export interface DaneParams {
  /** Usable TLSA records (usages 2 and 3 only) */
  tlsa: TlsaRecord[];
  /** TLSA base domain: the name the TLSA records were found under (after secure CNAMEs); also the SNI */
  baseDomain: string;
  /** Further names a DANE-TA(2) certificate may carry (the MX host name when it differs) */
  names: string[];
}

/** What one host must satisfy; policies raise it, the transport enforces it. */
export class Requirement {
  tls: TlsLevel = 0;
  /** The policy that set `tls` */
  tlsBy?: string;
  mx: MxLevel = 0;
  mxBy?: string;
  /**
   * Set by a policy that refuses the host outright (e.g. not in the MTA-STS policy): defer, don't connect.
   * `definite`: a retry would be refused again (false for a DNS error or timeout)
   */
  failure?: { policy: string; message: string; errno: string; definite: boolean };
  /** DANE in force for this host */
  dane?: DaneParams;
  /** An MTA-STS policy applies to this host (enforce or testing) */
  mtaSts?: "enforce" | "testing";
  /** That policy, as TLS-RPT reports it */
  stsPolicy?: { mode: string; mx: string[]; maxAge: number };
  /** Try to verify (report CV=yes) even when not required (tlsTryVerifyHosts) */
  tryVerify = false;
  /** Check the certificate's names (tlsVerifyCertHostnames); always true when a policy demands it */
  checkNames = false;
  /** Ask for a stapled OCSP response */
  requestOcsp = false;
  /** A good stapled OCSP response is part of authentication (hostsRequireOcsp) */
  requireOcsp = false;
  /** Further acceptable certificate names or `*.suffix` patterns (the route's tlsVerifyNames) */
  names: string[] = [];
  /** Minimum TLS version when authenticated by MTA-STS (RFC 8461 §4.2: TLS 1.2 or later) */
  minTls12 = false;

  /** Raises the TLS level to `level` if higher; `by` names the policy in logs. */
  raiseTls(level: TlsLevel, by: string): void {
    if (level > this.tls) {
      this.tls = level;
      this.tlsBy = by;
    }
  }

  /** Raises the MX level to `level` if higher. */
  raiseMx(level: MxLevel, by: string): void {
    if (level > this.mx) {
      this.mx = level;
      this.mxBy = by;
    }
  }

  /** Refuses the host; the first failure wins. `definite: false` for temporary failures (DNS errors). */
  fail(policy: string, message: string, errno = "TLS", definite = true): void {
    this.failure ??= { policy, message, errno, definite };
  }

  /** The trace of a failure before connecting, or of a requirement not met. */
  trace(policy?: string): SecurityTrace {
    const t: SecurityTrace = {
      policy: policy ?? this.#requiredLabel(),
      tlsRequired: TLS_LEVEL_NAMES[this.tls],
      mxRequired: MX_LEVEL_NAMES[this.mx],
    };
    if (this.tlsBy) t.requiredBy = this.tlsBy;
    return t;
  }

  #requiredLabel(): string {
    if (this.dane || this.tlsBy === "dane" || this.failure?.policy === "dane") return "dane";
    if (this.mtaSts) return `mta-sts(${this.mtaSts})`;
    if (this.tls === 2) return "pkix";
    return this.tls === 1 ? "encrypted" : "none";
  }
}

/** What an open session achieved: compared with a Requirement before a pooled session is reused. */
export interface Achieved {
  /** 0 clear, 1 encrypted, 2 authenticated (DANE, or PKIX with the name checked) */
  tls: TlsLevel;
  /** Authenticated by DANE; the matched TLSA usage */
  dane: boolean;
  tlsaUsage?: number;
  /** TLS 1.2 or later */
  tls12: boolean;
  /** The OCSP check passed */
  ocsp: boolean;
  /**
   * The certificate's name was checked and matched (PKIX with RFC 6125 names, or DANE-TA): a session verified
   * without the name check (tlsVerifyCertHostnames excludes the host) is not authenticated for a delivery
   * that needs one; DANE-EE(3) needs no name
   */
  named?: boolean;
}

/** Whether a session that achieved `a` may carry a delivery that requires `r`. */
export function meets(a: Achieved, r: Requirement): boolean {
  if (a.tls < r.tls) return false;
  if (r.dane && r.tls === 2 && !a.dane) return false;
  // Authentication without DANE (tlsVerifyHosts, MTA-STS, REQUIRETLS over PKIX) includes the name check.
  if (r.tls === 2 && !r.dane && !a.named) return false;
  if (r.minTls12 && !a.tls12) return false;
  if (r.requireOcsp && !a.ocsp) return false;
  return true;
}

/** The decision for one delivery over a session that achieved `a` under requirement `r`. */
export function traceOf(a: Achieved, r: Requirement): SecurityTrace {
  let policy: string;
  if (a.tls === 0) policy = "none";
  else if (a.dane) policy = "dane";
  else if (a.tls === 2 && r.mtaSts) policy = `mta-sts(${r.mtaSts})`;
  else if (a.tls === 2) policy = "pkix";
  // Encryption was required (hostsRequireTls, or only unusable TLSA records) and reached, unauthenticated.
  else if (r.tls === 1) policy = "encrypted";
  else policy = "opportunistic";
  const t = r.trace(policy);
  if (a.dane && a.tlsaUsage !== undefined) t.tlsaUsage = a.tlsaUsage;
  return t;
}
