/** The typed lookups every Resolver offers, written once on top of its `query()`. */

import { DnsError } from "./dns_error.ts";
import { reverseName } from "./reverse_name.ts";
import type {
  DnsAnswer,
  MxRecord,
  QueryOptions,
  RecordData,
  RecordType,
  Resolver,
  TlsaRecord,
} from "./resolver.ts";

/** A resolver whose typed helpers all go through `query()`. */
export abstract class TypedLookups implements Resolver {
  /** Any supported type. */
  abstract query<T extends RecordType>(
    name: string,
    type: T,
    options?: QueryOptions,
  ): Promise<DnsAnswer<RecordData[T]>>;

  /** MX records sorted by preference, then exchange. */
  mx(name: string, options?: QueryOptions): Promise<DnsAnswer<MxRecord>> {
    return this.query(name, "MX", options);
  }

  /** IPv4 addresses. */
  a(name: string, options?: QueryOptions): Promise<DnsAnswer<string>> {
    return this.query(name, "A", options);
  }

  /** IPv6 addresses. */
  aaaa(name: string, options?: QueryOptions): Promise<DnsAnswer<string>> {
    return this.query(name, "AAAA", options);
  }

  /** TXT records, strings of each record joined. */
  txt(name: string, options?: QueryOptions): Promise<DnsAnswer<string>> {
    return this.query(name, "TXT", options);
  }

  /** PTR names of an address; DnsError BADNAME when `ip` is not an address. */
  ptr(ip: string, options?: QueryOptions): Promise<DnsAnswer<string>> {
    const name = reverseName(ip);
    if (!name) {
      return Promise.reject(
        new DnsError("BADNAME", `Not an IP address: "${ip}"`, { qname: ip, qtype: "PTR" }),
      );
    }
    return this.query(name, "PTR", options);
  }

  /** The CNAME target of a name. */
  cname(name: string, options?: QueryOptions): Promise<DnsAnswer<string>> {
    return this.query(name, "CNAME", options);
  }

  /** TLSA records. */
  tlsa(name: string, options?: QueryOptions): Promise<DnsAnswer<TlsaRecord>> {
    return this.query(name, "TLSA", options);
  }
}
