/**
 * Built-in relay control, the first rcpt step: a recipient is accepted only for a domain in `relay.domains`,
 * or for any domain when the client is in `relay.clients` or authenticated with SMTP AUTH. Decided per recipient, denying by default.
 * SECURITY: for untrusted clients, sender-specified routing in the local part (`%`, `!`, a quoted `@`) and
 * address literals are refused, so `user%other@ours` or `"a@b"@ours` cannot bounce through a next hop.
 */

import { HostList, type HostListSpec, normalizeName } from "../core/host_list.ts";
import type { PolicyMiddleware, RcptContext } from "./context.ts";

/** Relay control settings. */
export interface RelayControlOptions {
  domains: HostListSpec;
  clients: HostListSpec;
  /** Deadline for function lists (ms; the stage's own deadline applies too) */
  timeoutMs?: number;
  /** Recipients accepted whatever their domain (valid SRS addresses of ours), decided by an earlier step */
  permit?: (c: RcptContext) => boolean;
}

/** Creates the relay-control middleware. */
export function relayControl(opts: RelayControlOptions): PolicyMiddleware<"rcpt"> {
  const domains = new HostList(opts.domains, { name: "relay.domains", timeoutMs: opts.timeoutMs });
  const clients = new HostList(opts.clients, { name: "relay.clients", timeoutMs: opts.timeoutMs });
  return async function relay_control(c, next) {
    const { local, domain } = c.recipient;
    if (opts.permit?.(c)) return await next();
    if (c.auth || (await clients.match({ ip: c.client.ip }, { signal: c.signal }))) return await next();
    // RFC 5321 4.5.1: postmaster without a domain is always ours.
    if (domain === "" && local.toLowerCase() === "postmaster") return await next();
    const routed = /[%!@]/.test(local);
    const literal = domain.startsWith("[");
    if (
      !routed && !literal && domain &&
      (await domains.match({ name: normalizeName(domain) }, { signal: c.signal }))
    ) {
      return await next();
    }
    c.log(`relay not permitted for <${c.recipient.address}>`);
    c.reject("Relay access denied", 550, "5.7.1");
  };
}
