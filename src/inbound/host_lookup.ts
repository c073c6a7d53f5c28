/**
 * The client's host name by forward-confirmed reverse DNS (FCrDNS, as Exim's host_lookup and Postfix do):
 * a PTR name counts only when its own A/AAAA records include the client's address, so a client cannot
 * name itself by owning its reverse zone alone.
 */

import { parseIp, unmapIp } from "../core/ip.ts";
import type { Resolver } from "../dns/resolver.ts";
import { errorMessage } from "../core/error_message.ts";

const MAX_NAMES = 5;

function sameIp(a: string, b: string): boolean {
  const x = parseIp(a), y = parseIp(b);
  if (!x || !y) return false;
  const ux = unmapIp(x), uy = unmapIp(y);
  return ux.length === uy.length && ux.every((v, i) => v === uy[i]);
}

/** What the lookup found: a confirmed name, or why there is none. */
export interface ClientNameResult {
  name?: string;
  /** Set when no name was confirmed: "no PTR", "not confirmed", or the DNS error */
  reason?: string;
}

/** Looks up and confirms the name of `ip`; never throws. */
export async function lookupClientName(
  resolver: Resolver,
  ip: string,
  opts: { signal?: AbortSignal } = {},
): Promise<ClientNameResult> {
  try {
    const ptr = await resolver.ptr(ip, { signal: opts.signal });
    if (ptr.records.length === 0) return { reason: "no PTR record" };
    const v6 = unmapIp(parseIp(ip) ?? new Uint8Array()).length === 16;
    for (const name of ptr.records.slice(0, MAX_NAMES)) {
      const forward = v6
        ? await resolver.aaaa(name, { signal: opts.signal })
        : await resolver.a(name, { signal: opts.signal });
      if (forward.records.some((addr) => sameIp(addr, ip))) return { name };
    }
    return { reason: `PTR ${ptr.records[0]} does not resolve back to ${ip}` };
  } catch (err) {
    return { reason: `DNS lookup failed: ${errorMessage(err)}` };
  }
}
