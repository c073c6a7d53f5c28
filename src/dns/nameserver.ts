/**
 * Which resolvers Ferry asks, and whose AD bit (RFC 4035 3.2.3) it believes. As in Postfix, AD is trusted
 * only from a resolver on loopback (127.0.0.0/8, ::1) or one the configuration marks trusted: the path to
 * any other resolver is unauthenticated, so its AD bit could be forged.
 */

import { parseIp, unmapIp } from "../core/ip.ts";

/** A recursive resolver to send queries to. */
export interface Nameserver {
  /** IPv4 or IPv6 address */
  address: string;
  /** UDP/TCP port (default 53) */
  port?: number;
  /** Believe this resolver's AD bit even though it is not on loopback */
  trusted?: boolean;
}

/** When to believe the AD bit: "loopback" (default: loopback or `trusted` servers), "never", "always". */
export type TrustAd = "loopback" | "never" | "always";

/** True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104. */
export function isLoopback(address: string): boolean {
  const raw = parseIp(address);
  if (!raw) return false;
  const b = unmapIp(raw);
  if (b.length === 4) return b[0] === 127;
  return b.every((x, i) => x === (i === 15 ? 1 : 0));
}

/** Whether an answer's AD bit from `server` is kept under `mode`. */
export function trustsAd(server: Nameserver, mode: TrustAd = "loopback"): boolean {
  if (mode === "never") return false;
  if (mode === "always") return true;
  return server.trusted === true || isLoopback(server.address);
}
