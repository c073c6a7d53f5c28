/**
 * Routing: which route a recipient domain takes (first match wins), and the hosts to try for it — configured
 * hosts in order, or MX (RFC 5321 5.1): sorted by preference with equal ones shuffled, A/AAAA of each,
 * implicit MX when there is none, null MX (RFC 7505) → 5.1.10, our own host in the list → 5.4.6 (loop).
 */

import { HostList, type HostListSpec, normalizeName } from "../core/host_list.ts";
import { isIp } from "../core/ip.ts";
import type { DnsAnswer, Resolver } from "../dns/resolver.ts";
import { DnsError } from "../dns/dns_error.ts";
import { routeName } from "../core/route_name.ts";

/** A route as the config gives it. */
export interface RouteSpec {
  name?: string;
  domains: HostListSpec;
  hosts?: string[] | ((domain: string) => string[] | Promise<string[]>);
  mx?: boolean;
  port: number;
  dsnLasthop: boolean;
  /** AUTH to the route's hosts, only over TLS */
  auth?: { user: string; password: string };
  /** The route's own event handlers (run before the global ones) */
  events?: Record<string, unknown>;
  hostsRequireTls?: HostListSpec;
  tlsVerifyHosts?: HostListSpec;
  tlsTryVerifyHosts?: HostListSpec;
  tlsVerifyCertHostnames?: HostListSpec;
  /** Names or `*.suffix` patterns the peer certificate may carry besides the host's own (RFC 6125) */
  tlsVerifyNames?: string[];
  hostsRequestOcsp?: HostListSpec;
  hostsRequireOcsp?: HostListSpec;
  hostsTryPrdr?: HostListSpec;
  hostsTryDane?: HostListSpec;
  hostsRequireDane?: HostListSpec;
  dnssecRequestDomains?: HostListSpec;
  dnssecRequireDomains?: HostListSpec;
}

/** A compiled route. */
export interface Route {
  /** Position in the config: the route's identity (names are for logs) */
  index: number;
  name: string;
  spec: RouteSpec;
  domains: HostList;
}

/** One address to try. */
export interface TargetHost {
  /** The host name from the MX or route (or the literal) */
  name: string;
  ip: string;
  port: number;
  /** MX preference, or the position in a host list */
  preference: number;
  /** Present (true) when the address answer was DNSSEC-validated (RFC 7672 §2.2.1) */
  secure?: true;
  /** The end of the host name's CNAME chain when the name is an alias and the chain validated (§2.2.2) */
  alias?: string;
}

/** What routing learnt about the destination's DNSSEC state (filled in by `resolveTargets`). */
export interface RouteDnssec {
  /** The hosts came from an MX lookup */
  viaMx: boolean;
  /** The MX answer (or its secure denial, for an implicit MX) was DNSSEC-validated */
  mxSecure: boolean;
}

/** Why a domain cannot be routed now. `temporary` → retry later; otherwise fail the recipients. */
export class RoutingError extends Error {
  readonly temporary: boolean;
  /** RFC 3463 code for the DSN */
  readonly status: string;
  constructor(message: string, status: string, temporary: boolean) {
    super(message);
    this.name = "RoutingError";
    this.status = status;
    this.temporary = temporary;
  }
}

/** Compiles the configured routes; `timeoutMs` bounds function host lists (`limits.policyTimeout`). */
export function compileRoutes(specs: readonly RouteSpec[], opts: { timeoutMs?: number } = {}): Route[] {
  return specs.map((spec, index) => ({
    index,
    name: routeName(spec, index),
    spec,
    domains: new HostList(spec.domains, { name: `routes[${index}].domains`, timeoutMs: opts.timeoutMs }),
  }));
}

/** The first route whose domain list matches, or undefined. */
export async function findRoute(routes: readonly Route[], domain: string): Promise<Route | undefined> {
  const name = normalizeName(domain);
  for (const r of routes) if (await r.domains.match({ name })) return r;
  return undefined;
}

/** Splits "host", "host:port", "[ip]:port", "[ipv6]" and bare IPv6 into name and port. */
export function parseHostPort(text: string, defaultPort: number): { name: string; port: number } {
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(text);
  if (bracket) return { name: bracket[1], port: bracket[2] ? Number(bracket[2]) : defaultPort };
  if (isIp(text)) return { name: text, port: defaultPort };
  const m = /^([^:]+)(?::(\d+))?$/.exec(text);
  if (!m) throw new RoutingError(`Bad host "${text}" in route`, "4.3.5", true);
  return { name: m[1], port: m[2] ? Number(m[2]) : defaultPort };
}

function shuffleEqual<T extends { preference: number }>(list: T[]): T[] {
  const sorted = [...list].sort((a, b) => a.preference - b.preference);
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j < sorted.length && sorted[j].preference === sorted[i].preference) j++;
    for (let k = j - 1; k > i; k--) {
      const r = i + Math.floor(Math.random() * (k - i + 1));
      [sorted[k], sorted[r]] = [sorted[r], sorted[k]];
    }
    i = j;
  }
  return sorted;
}

function dnsTrouble(err: unknown, what: string): never {
  if (err instanceof DnsError) {
    throw new RoutingError(
      `DNS lookup of ${what} failed: ${err.message}`,
      err.temporary ? "4.4.3" : "5.1.2",
      err.temporary,
    );
  }
  throw err;
}

/**
 * Looks up the addresses of a host name (A, then AAAA); an IP literal is its own address. `secure`: both
 * answers were DNSSEC-validated; `alias`: where a validated CNAME chain ended, when the name is an alias.
 * When one of the two lookups fails and the other answered with addresses from an unsigned zone, those
 * addresses are used (as Postfix and Exim do); an answer from a signed zone beside a failed lookup (which may
 * be a bogus answer) defers the host, as both failing does.
 */
export async function addressesOf(
  resolver: Resolver,
  name: string,
): Promise<{ ips: string[]; nxdomain: boolean; secure: boolean; alias?: string }> {
  if (isIp(name)) return { ips: [name], nxdomain: false, secure: false };
  const [ra, raaaa] = await Promise.allSettled([resolver.a(name), resolver.aaaa(name)]);
  if (ra.status === "rejected" && raaaa.status === "rejected") dnsTrouble(ra.reason, `${name} (A)`);
  if (ra.status === "rejected" || raaaa.status === "rejected") {
    const [failed, what, answered] = ra.status === "rejected"
      ? [ra.reason, "A", raaaa as PromiseFulfilledResult<DnsAnswer<string>>]
      : [(raaaa as PromiseRejectedResult).reason, "AAAA", ra];
    const usable = answered.value.records.length > 0 && !answered.value.ad;
    if (!usable || !(failed instanceof DnsError)) dnsTrouble(failed, `${name} (${what})`);
    return { ips: [...answered.value.records], nxdomain: false, secure: false };
  }
  const a = ra.value, aaaa = raaaa.value;
  const secure = a.ad && aaaa.ad;
  const end = a.records.length ? a.name : aaaa.name;
  const alias = secure && end && normalizeName(end) !== normalizeName(name) ? normalizeName(end) : undefined;
  return { ips: [...a.records, ...aaaa.records], nxdomain: a.rcode === "NXDOMAIN", secure, alias };
}

/** The DNSSEC facts of one address lookup, as TargetHost fields (absent when insecure). */
function secureFields(r: { secure: boolean; alias?: string }): Pick<TargetHost, "secure" | "alias"> {
  if (!r.secure) return {};
  return r.alias ? { secure: true, alias: r.alias } : { secure: true };
}

/** What routing needs to know about us, to find loops. */
export interface SelfInfo {
  /** Our host names (lower case) */
  names: string[];
  /** Our listening addresses as "ip:port" */
  endpoints: string[];
}

/**
 * Resolves the hosts to try for `domain` on `route`. Throws RoutingError. When `dnssec` is given, it is
 * filled in with what the MX lookup said about DNSSEC (each target carries its own address's state).
 */
export async function resolveTargets(
  route: Route,
  domain: string,
  resolver: Resolver,
  self: SelfInfo,
  dnssec?: RouteDnssec,
): Promise<TargetHost[]> {
  const spec = route.spec;
  const d = normalizeName(domain);
  let out: TargetHost[] = [];
  if (dnssec) {
    dnssec.viaMx = false;
    dnssec.mxSecure = false;
  }
  if (!spec.mx) {
    const list = typeof spec.hosts === "function" ? await spec.hosts(d) : spec.hosts ?? [];
    for (const [i, h] of list.entries()) {
      const { name, port } = parseHostPort(h, spec.port);
      const found = await addressesOf(resolver, name);
      for (const ip of found.ips) out.push({ name, ip, port, preference: i, ...secureFields(found) });
    }
    if (out.length === 0) {
      throw new RoutingError(`No address for the hosts of route ${route.name}`, "4.4.3", true);
    }
  } else if (d.startsWith("[")) {
    const ip = d.slice(1, -1).replace(/^ipv6:/i, "");
    if (!isIp(ip)) throw new RoutingError(`Bad address literal ${domain}`, "5.1.2", false);
    out = [{ name: d, ip, port: spec.port, preference: 0 }];
  } else {
    const mx = await resolver.mx(d).catch((e) => dnsTrouble(e, `${d} (MX)`));
    const records = mx.records;
    if (dnssec) {
      dnssec.viaMx = true;
      dnssec.mxSecure = mx.ad;
    }
    if (records.length === 1 && (records[0].exchange === "" || records[0].exchange === ".")) {
      throw new RoutingError(`Domain ${d} accepts no mail (null MX)`, "5.1.10", false);
    }
    if (records.length === 0) {
      const found = await addressesOf(resolver, d);
      const { ips, nxdomain } = found;
      if (ips.length === 0) {
        throw new RoutingError(
          nxdomain || mx.rcode === "NXDOMAIN"
            ? `Domain ${d} does not exist`
            : `Domain ${d} has no MX and no address`,
          "5.1.2",
          false,
        );
      }
      out = ips.map((ip) => ({ name: d, ip, port: spec.port, preference: 0, ...secureFields(found) }));
    } else {
      let hosts = shuffleEqual(
        records.map((r) => ({ name: normalizeName(r.exchange), preference: r.preference })),
      );
      // RFC 5321 5.1: when we are in the list, only hosts more preferred than us may be used.
      const ours = hosts.filter((h) => self.names.includes(h.name));
      if (ours.length) {
        const limit = Math.min(...ours.map((h) => h.preference));
        hosts = hosts.filter((h) => h.preference < limit);
        if (hosts.length === 0) {
          throw new RoutingError(`MX for ${d} points to this host (mail loop)`, "5.4.6", false);
        }
      }
      let lastError: unknown;
      for (const h of hosts) {
        try {
          const found = await addressesOf(resolver, h.name);
          for (const ip of found.ips) {
            out.push({ name: h.name, ip, port: spec.port, preference: h.preference, ...secureFields(found) });
          }
        } catch (err) {
          lastError = err;
        }
      }
      if (out.length === 0) {
        if (lastError) throw lastError;
        throw new RoutingError(`No address for any MX host of ${d}`, "4.4.4", true);
      }
    }
  }
  const looped = out.filter((t) => self.endpoints.includes(`${t.ip}:${t.port}`));
  if (looped.length) {
    out = out.filter((t) => !looped.includes(t));
    if (out.length === 0) {
      throw new RoutingError(`Route for ${d} leads back to this host (mail loop)`, "5.4.6", false);
    }
  }
  return out;
}
