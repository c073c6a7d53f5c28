/**
 * The security policies every route shares, built from the validated config: MTA-STS (one durable policy
 * cache in the spool directory). The per-route ones (host lists, DANE) are built by `transportPolicy`.
 */

import type { ResolvedConfig } from "../../config/schema.ts";
import type { Resolver } from "../../dns/resolver.ts";
import { TlsClientContext } from "../../tls/client.ts";
import type { SecurityPolicy } from "./engine.ts";
import { mtaStsPolicy, StsCache } from "./mta_sts.ts";
import { requireTlsPolicy } from "./require_tls.ts";
import type { TlsRptResultType, TlsRptStore } from "./tls_rpt.ts";

/**
 * The shared outbound policies for `config`; `log` gets one line per MTA-STS fetch failure, which `tlsRpt`
 * (when given) also records as the RFC 8460 result type the failure has.
 */
export function outboundPolicies(
  config: ResolvedConfig,
  resolver: Resolver,
  log: (line: string) => void,
  tlsRpt?: TlsRptStore,
): SecurityPolicy[] {
  const sts = config.delivery.mtaSts;
  // REQUIRETLS runs last: it judges what DANE and MTA-STS decided.
  if (!sts.enable) return [requireTlsPolicy()];
  let context: TlsClientContext | undefined;
  return [
    mtaStsPolicy({
      resolver,
      // Made on first use: a Ferry whose mail never meets an MTA-STS domain never loads a CA store for it.
      tlsContext: () => context ??= new TlsClientContext(sts.caFile ? { caFile: sts.caFile } : {}),
      cache: new StsCache(`${config.spool.dir}/mta-sts-cache.json`),
      port: sts.port,
      timeoutMs: sts.timeout,
      onFailure: (domain, kind, message) => {
        log(`mta-sts: ${domain}: ${kind}: ${message}`);
        void tlsRpt?.record({
          domain,
          policyType: "sts",
          failure: kind as TlsRptResultType,
          detail: message,
        });
      },
    }),
    requireTlsPolicy(),
  ];
}
