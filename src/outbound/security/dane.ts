/**
 * DANE for SMTP (RFC 7672, RFC 7671; Exim's hosts_try_dane, hosts_require_dane, dnssec_request_domains,
 * dnssec_require_domains). A host is a DANE candidate only when the MX answer (for MX routing) and the host's
 * own address answer were DNSSEC-validated; then `_port._tcp.<base>` TLSA is asked, the base being the end of
 * a validated CNAME chain first and the host name second (§2.2.2). Usable records (usages 2 and 3) require an
 * authenticated session that only those records can give; records that are all unusable require encryption
 * only; a lookup that fails (SERVFAIL — a bogus signature —, a timeout) defers the host and never falls back.
 * Trusts the AD bit only as the DNS client reports it (a loopback or explicitly trusted resolver).
 */

import type { HostList } from "../../core/host_list.ts";
import { isIp } from "../../core/ip.ts";
import { DnsError } from "../../dns/dns_error.ts";
import type { DnsAnswer, Resolver, TlsaRecord } from "../../dns/resolver.ts";
import type { SecurityPolicy } from "./engine.ts";

/** DANE options of one route (or the delivery defaults). */
export interface DaneOptions {
  /** Hosts for which TLSA records are looked up and used when the DNS is secure (default "*") */
  hostsTryDane: HostList;
  /** Hosts that must be DANE-authenticated: no secure, usable TLSA → deferred (default none) */
  hostsRequireDane: HostList;
  /** Domains whose DNSSEC state is trusted at all; elsewhere answers count as insecure (default "*") */
  dnssecRequestDomains: HostList;
  /** Domains whose MX and address answers must be DNSSEC-validated, else deferred (default none) */
  dnssecRequireDomains: HostList;
}

/** RFC 7672 §3.1: only DANE-TA(2) and DANE-EE(3) are usable for SMTP; selectors 0/1, matching types 0/1/2. */
export function usableTlsa(r: TlsaRecord): boolean {
  return (r.usage === 2 || r.usage === 3) && (r.selector === 0 || r.selector === 1) &&
    r.matchingType >= 0 && r.matchingType <= 2 && r.data.length > 0 &&
    (r.matchingType !== 1 || r.data.length === 32) && (r.matchingType !== 2 || r.data.length === 64);
}

/** The DANE policy. */
export function danePolicy(resolver: Resolver, options: DaneOptions): SecurityPolicy {
  const tryDane = options.hostsTryDane;
  const requireDane = options.hostsRequireDane;
  const request = options.dnssecRequestDomains;
  const require = options.dnssecRequireDomains;
  return {
    name: "dane",
    published: true,
    async prepareDomain(info) {
      const domainTrusted = await request.match({ name: info.domain });
      const mustBeSecure = await require.match({ name: info.domain });
      return async function dane(req, target) {
        const subject = { ip: target.ip, name: target.name };
        const secure = domainTrusted && target.secure === true && (!info.viaMx || info.mxSecure);
        if (mustBeSecure) {
          req.raiseMx(2, "dnssecRequireDomains");
          if (!secure) {
            const what = info.viaMx && !info.mxSecure ? `MX of ${info.domain}` : `address of ${target.name}`;
            req.fail("dnssecRequireDomains", `${what} is not DNSSEC-validated`, "DNSSEC");
            return;
          }
        }
        const required = await requireDane.match(subject);
        if (!required && !(await tryDane.match(subject))) return;
        if (isIp(target.name) || !secure) {
          if (required) {
            const why = isIp(target.name)
              ? `${target.name} is an address literal`
              : !domainTrusted
              ? `${info.domain} is not in dnssecRequestDomains`
              : info.viaMx && !info.mxSecure
              ? `the MX answer for ${info.domain} is not DNSSEC-validated`
              : `the address of ${target.name} is not DNSSEC-validated`;
            req.fail("dane", `required but ${why}`, "DANE");
          }
          return;
        }
        const owners = target.alias ? [target.alias, target.name] : [target.name];
        let found: { base: string; answer: DnsAnswer<TlsaRecord> } | undefined;
        for (const base of owners) {
          let answer: DnsAnswer<TlsaRecord>;
          try {
            answer = await resolver.tlsa(`_${target.port}._tcp.${base}`, { signal: info.signal });
          } catch (err) {
            // A signed zone that cannot answer (bogus signature → SERVFAIL, timeout): never fall back.
            const why = err instanceof DnsError ? err.message : String(err);
            req.raiseTls(2, "dane");
            req.fail("dane", `TLSA lookup for _${target.port}._tcp.${base} failed: ${why}`, "DANE", false);
            return;
          }
          // An insecure TLSA answer (an unsigned delegation below a signed MX host) is no DANE (§2.2).
          if (!answer.ad || answer.records.length === 0) continue;
          found = { base, answer };
          break;
        }
        if (!found) {
          if (required) req.fail("dane", `required but no secure TLSA records for ${target.name}`, "DANE");
          return;
        }
        const usable = found.answer.records.filter(usableTlsa);
        if (usable.length === 0) {
          // §3.1.3: unusable records still say the server does TLS: encrypt, unauthenticated.
          req.raiseTls(1, "dane");
          if (required) {
            req.fail("dane", `required but only unusable TLSA records for ${target.name}`, "DANE");
          }
          return;
        }
        req.raiseTls(2, "dane");
        req.dane = {
          tlsa: usable,
          baseDomain: found.base,
          // A DANE-TA(2) certificate may name the TLSA base domain or the MX host name (§3.2.3).
          names: found.base === target.name ? [] : [target.name],
        };
        // The reference texts' OCSP default under DANE: a DANE-EE(3) record pins the server's own key, so no
        // stapled OCSP response is asked for; with DANE-TA(2) records only, revocation still matters and the
        // request follows hostsRequestOcsp (default "*"). hostsRequireOcsp always asks.
        if (usable.some((r) => r.usage === 3) && !req.requireOcsp) req.requestOcsp = false;
      };
    },
  };
}
