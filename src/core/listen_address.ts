/** The admin listener's address: `"host:port"` or `"[v6]:port"`, and whether it is loopback only. */

import { cidrContains, isIp, parseCidr } from "./ip.ts";

/** A parsed `admin.listen`. */
export interface AdminAddress {
  hostname: string;
  port: number;
  loopback: boolean;
}

const V4_LOOPBACK = parseCidr("127.0.0.0/8")!;

/** Parses `admin.listen`; undefined when it is not an IP address with a port 0–65535. */
export function parseAdminListen(text: string): AdminAddress | undefined {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text) ?? /^([^:\[\]]+):(\d{1,5})$/.exec(text);
  if (!m) return undefined;
  const [, hostname, p] = m;
  const port = Number(p);
  if (!isIp(hostname) || port > 65535) return undefined;
  const loopback = hostname === "::1" || (!hostname.includes(":") && cidrContains(V4_LOOPBACK, hostname));
  return { hostname, port, loopback };
}
