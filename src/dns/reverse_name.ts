/** Reverse-lookup names for IP addresses (RFC 1035 3.5 in-addr.arpa, RFC 3596 2.5 ip6.arpa). */

import { parseIp, unmapIp } from "../core/ip.ts";

/**
 * The PTR owner name for an address: `4.3.2.1.in-addr.arpa` for 1.2.3.4, nibbles under `ip6.arpa` for
 * IPv6 (an IPv4-mapped IPv6 address is treated as IPv4). Undefined when `ip` is not an address.
 */
export function reverseName(ip: string): string | undefined {
  const raw = parseIp(ip);
  if (!raw) return undefined;
  const bytes = unmapIp(raw);
  if (bytes.length === 4) return `${[...bytes].reverse().join(".")}.in-addr.arpa`;
  const nibbles: string[] = [];
  for (let i = bytes.length - 1; i >= 0; i--) {
    nibbles.push((bytes[i] & 0x0f).toString(16), (bytes[i] >> 4).toString(16));
  }
  return `${nibbles.join(".")}.ip6.arpa`;
}
