/**
 * REQUIRETLS (RFC 8689 §4.2.1) as a security policy: a message that carries it may go only to a host whose
 * MX name is authenticated (a DNSSEC-validated MX and address, or an MTA-STS policy in enforce mode; hosts
 * a route lists are authenticated by the configuration) over TLS authenticated by DANE or PKIX; the peer
 * must then also offer REQUIRETLS (checked when the transaction is planned). Runs after DANE and MTA-STS so
 * it sees what they decided.
 */

import type { SecurityPolicy } from "./engine.ts";

/** The REQUIRETLS policy. */
export function requireTlsPolicy(): SecurityPolicy {
  return {
    name: "requiretls",
    prepareDomain(info) {
      if (!info.requireTls) return Promise.resolve(undefined);
      return Promise.resolve(function requireTls(req, target) {
        req.raiseTls(2, "requiretls");
        req.checkNames = true;
        const mxAuthenticated = !info.viaMx || (info.mxSecure && target.secure === true) ||
          req.mtaSts === "enforce";
        if (!mxAuthenticated) {
          req.fail(
            "requiretls",
            `the MX ${target.name} of ${info.domain} is authenticated neither by DNSSEC nor by MTA-STS`,
            "REQUIRETLS",
          );
        }
        if (mxAuthenticated) req.raiseMx(info.viaMx && req.mtaSts !== "enforce" ? 2 : 1, "requiretls");
      });
    },
  };
}
