/**
 * Turns a decoded response into a `DnsAnswer`: follows the CNAME chain for the asked type (RFC 1034 3.6.2,
 * RFC 6604: the rcode speaks for the chain's last name), converts records to Ferry's shapes, and computes
 * the TTL: lowest record TTL, or for NXDOMAIN/NODATA min(SOA TTL, SOA minimum) (RFC 2308 5). Private.
 */

import { formatIp, parseIp } from "../core/ip.ts";
import type { DnsAnswer, MxRecord, RecordData, RecordType, TlsaRecord } from "./resolver.ts";
import type { WireMessage, WireRecord } from "./_wire.ts";

/** Longest CNAME chain followed inside one response. */
const MAX_CHAIN = 16;

/** Limits applied to TTLs taken from responses. */
export interface TtlLimits {
  /** Highest TTL kept for data, in seconds */
  maxTtl: number;
  /** Highest TTL kept for NXDOMAIN/NODATA, in seconds */
  maxNegativeTtl: number;
}

/** Lower-case, without the trailing dot; the root stays ".". */
export function canonicalName(name: string): string {
  if (name === "" || name === ".") return ".";
  const n = name.toLowerCase();
  return n.endsWith(".") ? n.slice(0, -1) : n;
}

function bytesOf(v: unknown): Uint8Array | undefined {
  return v instanceof Uint8Array ? new Uint8Array(v) : undefined;
}

type Converter<T> = (data: unknown) => T | undefined;

const converters: { [K in RecordType]: Converter<RecordData[K]> } = {
  A: (d) => {
    const ip = typeof d === "string" ? parseIp(d) : undefined;
    return ip?.length === 4 ? formatIp(ip) : undefined;
  },
  AAAA: (d) => {
    const ip = typeof d === "string" ? parseIp(d) : undefined;
    return ip?.length === 16 ? formatIp(ip) : undefined;
  },
  MX: (d) => {
    const mx = d as { preference?: unknown; exchange?: unknown } | undefined;
    if (typeof mx?.preference !== "number" || typeof mx.exchange !== "string") return undefined;
    return { preference: mx.preference, exchange: canonicalName(mx.exchange) } satisfies MxRecord;
  },
  TXT: (d) => {
    const parts = (Array.isArray(d) ? d : [d]).map((p) =>
      typeof p === "string" ? new TextEncoder().encode(p) : bytesOf(p)
    );
    if (parts.some((p) => p === undefined)) return undefined;
    const all = new Uint8Array(parts.reduce((n, p) => n + p!.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p!, at);
      at += p!.length;
    }
    return new TextDecoder().decode(all);
  },
  PTR: (d) => typeof d === "string" ? canonicalName(d) : undefined,
  CNAME: (d) => typeof d === "string" ? canonicalName(d) : undefined,
  TLSA: (d) => {
    const t = d as
      | { usage?: unknown; selector?: unknown; matchingType?: unknown; certificate?: unknown }
      | undefined;
    const data = bytesOf(t?.certificate);
    if (
      typeof t?.usage !== "number" || typeof t.selector !== "number" || typeof t.matchingType !== "number"
    ) {
      return undefined;
    }
    if (!data) return undefined;
    return { usage: t.usage, selector: t.selector, matchingType: t.matchingType, data } satisfies TlsaRecord;
  },
};

function ttlOf(r: WireRecord): number {
  return typeof r.ttl === "number" && r.ttl >= 0 ? r.ttl : 0;
}

/**
 * The answer a response gives to (qname, qtype). `qname` must be in canonical form. The `ad` field is the
 * response's AD bit; the caller decides whether to trust it.
 */
export function extractAnswer<T extends RecordType>(
  msg: WireMessage,
  qname: string,
  qtype: T,
  limits: TtlLimits,
): DnsAnswer<RecordData[T]> {
  const isIn = (r: WireRecord) => r.class === undefined || r.class === "IN";
  let current = qname;
  let chainTtl = Infinity;
  const seen = new Set<string>([current]);
  const records: RecordData[T][] = [];
  let recordTtl = Infinity;
  for (let hop = 0; hop <= MAX_CHAIN; hop++) {
    const here = msg.answers.filter((r) => isIn(r) && canonicalName(r.name) === current);
    for (const r of here) {
      if (r.type !== qtype) continue;
      const v = converters[qtype](r.data);
      if (v === undefined) continue;
      records.push(v);
      recordTtl = Math.min(recordTtl, ttlOf(r));
    }
    if (records.length || qtype === "CNAME") break;
    const alias = here.find((r) => r.type === "CNAME");
    const target = alias && converters.CNAME(alias.data);
    if (!alias || !target || seen.has(target)) break;
    chainTtl = Math.min(chainTtl, ttlOf(alias));
    seen.add(target);
    current = target;
  }
  if (qtype === "MX") {
    (records as MxRecord[]).sort((x, y) =>
      x.preference - y.preference || (x.exchange < y.exchange ? -1 : x.exchange > y.exchange ? 1 : 0)
    );
  }
  if (records.length) {
    const ttl = Math.min(recordTtl, chainTtl, limits.maxTtl);
    return { records, ad: msg.flag_ad, ttl, rcode: "NOERROR", name: current };
  }
  const soa = msg.authorities.find((r) => r.type === "SOA" && isIn(r));
  const minimum = (soa?.data as { minimum?: unknown } | undefined)?.minimum;
  // RFC 2308 5: without an SOA a negative answer is not cached.
  const negative = soa && typeof minimum === "number" ? Math.min(ttlOf(soa), minimum) : 0;
  return {
    records,
    ad: msg.flag_ad,
    ttl: Math.min(negative, chainTtl, limits.maxNegativeTtl),
    rcode: msg.rcode === "NXDOMAIN" ? "NXDOMAIN" : "NOERROR",
    name: current,
  };
}
