/**
 * The `Resolver` contract every room uses for DNS (RFC 1035, RFC 2308 negative answers, RFC 4035 AD bit,
 * RFC 6698 TLSA). NXDOMAIN and NODATA are answers with no records; server failures and timeouts throw
 * `DnsError`. `ad` is true only when a resolver Ferry trusts said the data was DNSSEC-validated.
 */

/** The record types a Resolver answers. */
export type RecordType = "A" | "AAAA" | "MX" | "TXT" | "PTR" | "CNAME" | "TLSA";

/** An MX record (RFC 1035 3.3.9); a null MX (RFC 7505) has exchange ".". */
export interface MxRecord {
  exchange: string;
  preference: number;
}

/** A TLSA record (RFC 6698 2.1): certificate usage, selector, matching type, association data. */
export interface TlsaRecord {
  usage: number;
  selector: number;
  matchingType: number;
  data: Uint8Array;
}

/** The shape of one record, by type: addresses as text, names without trailing dot, TXT strings joined. */
export interface RecordData {
  A: string;
  AAAA: string;
  MX: MxRecord;
  TXT: string;
  PTR: string;
  CNAME: string;
  TLSA: TlsaRecord;
}

/** The answer to one question. */
export interface DnsAnswer<T> {
  /** The records of the asked type (after following CNAMEs); empty for NXDOMAIN and NODATA */
  records: T[];
  /** True when the data (or the denial) was validated by a trusted resolver (RFC 4035 3.2.3) */
  ad: boolean;
  /** Seconds the answer may still be used: lowest TTL of the records, or the negative TTL (RFC 2308 5) */
  ttl: number;
  /** NOERROR (records or NODATA) or NXDOMAIN; every other rcode throws a DnsError */
  rcode: "NOERROR" | "NXDOMAIN";
  /** The name the records belong to: the asked name, or the end of its CNAME chain (lower case, no dot) */
  name: string;
}

/** Per-query options. */
export interface QueryOptions {
  /** Abandons the query; it rejects with the signal's reason */
  signal?: AbortSignal;
}

/** A DNS resolver. Names may be given with or without the trailing dot; case does not matter. */
export interface Resolver {
  /** Any supported type; the typed helpers below call this. */
  query<T extends RecordType>(
    name: string,
    type: T,
    options?: QueryOptions,
  ): Promise<DnsAnswer<RecordData[T]>>;
  /** MX records, sorted by preference (then exchange name). */
  mx(name: string, options?: QueryOptions): Promise<DnsAnswer<MxRecord>>;
  /** IPv4 addresses as dotted quads. */
  a(name: string, options?: QueryOptions): Promise<DnsAnswer<string>>;
  /** IPv6 addresses in RFC 5952 form. */
  aaaa(name: string, options?: QueryOptions): Promise<DnsAnswer<string>>;
  /** TXT records, each record's strings concatenated. */
  txt(name: string, options?: QueryOptions): Promise<DnsAnswer<string>>;
  /** PTR names for an IPv4 or IPv6 address (the reverse name is built here). */
  ptr(ip: string, options?: QueryOptions): Promise<DnsAnswer<string>>;
  /** The CNAME target of a name (not followed). */
  cname(name: string, options?: QueryOptions): Promise<DnsAnswer<string>>;
  /** TLSA records (RFC 6698), e.g. for `_25._tcp.mx.example.`. */
  tlsa(name: string, options?: QueryOptions): Promise<DnsAnswer<TlsaRecord>>;
}
