/**
 * The outbound security engine: an ordered list of policies (local host lists, DANE, MTA-STS, REQUIRETLS),
 * each prepared once per destination domain and then asked about every host to try. A policy may raise the
 * required MX or TLS level, add what the handshake needs (TLSA records, names, OCSP), or refuse the host;
 * it can never lower what another policy required (maddy's mxauth model). The transport enforces the result.
 */

import type { TargetHost } from "../routing.ts";
import { Requirement } from "./levels.ts";

/** What is known about a destination domain when its policies are prepared. */
export interface DomainInfo {
  /** The recipient domain (lower case) */
  domain: string;
  /** The hosts came from an MX lookup (not from a route's host list or an address literal) */
  viaMx: boolean;
  /** The MX answer was DNSSEC-validated (AD bit from a trusted resolver) */
  mxSecure: boolean;
  /** Aborts slow preparation (MTA-STS fetch) */
  signal?: AbortSignal;
  /** The message carries REQUIRETLS (RFC 8689) */
  requireTls?: boolean;
  /** The message says `TLS-Required: No` (RFC 8689 §5): the recipient domain's policies are not applied */
  tlsOptional?: boolean;
}

/** A policy's judgement of one host: raise levels on `req`, or `req.fail(...)`. */
export type HostCheck = (req: Requirement, target: TargetHost) => void | Promise<void>;

/** One outbound security policy (maddy's PrepareDomain → CheckMX/PrepareConn). */
export interface SecurityPolicy {
  /** The name logs use for what it required or refused */
  readonly name: string;
  /** Called once per domain and delivery attempt; undefined when the policy has nothing to say there */
  prepareDomain(info: DomainInfo): Promise<HostCheck | undefined>;
  /** A policy the recipient domain publishes (DANE, MTA-STS): not applied under `TLS-Required: No` */
  readonly published?: boolean;
}

/** The prepared policies for one domain: a Requirement per host. */
export interface DomainSecurity {
  requirementFor(target: TargetHost): Promise<Requirement>;
}

/** Runs the policies in order; later policies see (and can only raise) what earlier ones required. */
export class SecurityEngine {
  readonly policies: readonly SecurityPolicy[];

  constructor(policies: readonly SecurityPolicy[]) {
    this.policies = policies;
  }

  /** Prepares every policy for `info.domain`. A policy that throws refuses every host of the domain. */
  async prepare(info: DomainInfo): Promise<DomainSecurity> {
    const checks: { name: string; check?: HostCheck; error?: string }[] = [];
    for (const p of this.policies) {
      if (p.published && info.tlsOptional && !info.requireTls) continue;
      try {
        checks.push({ name: p.name, check: await p.prepareDomain(info) });
      } catch (err) {
        checks.push({ name: p.name, error: err instanceof Error ? err.message : String(err) });
      }
    }
    return {
      async requirementFor(target: TargetHost): Promise<Requirement> {
        const req = new Requirement();
        for (const c of checks) {
          if (c.error !== undefined) req.fail(c.name, c.error, "TLS", false);
          else if (c.check) await c.check(req, target);
        }
        return req;
      },
    };
  }
}
