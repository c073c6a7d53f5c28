/**
 * An in-memory Resolver for tests: answers from a table, follows CNAMEs like a recursive resolver,
 * reports NXDOMAIN for unknown names and NODATA for known names without the type (RFC 2308), and throws
 * DnsError for failures the test sets. The AD bit is whatever the test says.
 */

import { DnsError, type DnsErrorCode } from "./dns_error.ts";
import type { DnsAnswer, MxRecord, QueryOptions, RecordData, RecordType } from "./resolver.ts";
import { reverseName } from "./reverse_name.ts";
import { TypedLookups } from "./_typed_lookups.ts";
import { normalizeName } from "./_name.ts";

/** Records by owner name, then type. An owner written as an IP address means its reverse name (for PTR). */
export type MemoryTable = Record<string, { [K in RecordType]?: RecordData[K][] }>;

/** Options for `MemoryResolver`. */
export interface MemoryResolverOptions {
  /** Initial records */
  records?: MemoryTable;
  /** AD bit of every answer unless `set()` said otherwise (default false) */
  ad?: boolean;
  /** TTL of every answer unless `set()` said otherwise (default 300) */
  ttl?: number;
}

interface Entry {
  records: unknown[];
  ad?: boolean;
  ttl?: number;
}

function owner(name: string, type: string): string {
  return normalizeName(reverseName(name) ?? name, type);
}

function byPreference(x: MxRecord, y: MxRecord): number {
  return x.preference - y.preference || (x.exchange < y.exchange ? -1 : x.exchange > y.exchange ? 1 : 0);
}

/** A Resolver over a table, with settable AD bit and failures, that records every question. */
export class MemoryResolver extends TypedLookups {
  /** AD bit for answers without their own */
  ad: boolean;
  /** TTL for answers without their own */
  ttl: number;
  /** Every question asked, in order (after PTR names are reversed) */
  readonly queries: { name: string; type: RecordType }[] = [];
  #names = new Map<string, Map<string, Entry>>();
  #failures = new Map<string, DnsError>();

  /** Creates a resolver holding `options.records`. */
  constructor(options: MemoryResolverOptions = {}) {
    super();
    this.ad = options.ad ?? false;
    this.ttl = options.ttl ?? 300;
    for (const [name, types] of Object.entries(options.records ?? {})) {
      for (const [type, records] of Object.entries(types)) this.set(name, type as RecordType, records ?? []);
    }
  }

  /** Sets the records of (name, type); an empty list makes the name exist with no data of that type. */
  set<T extends RecordType>(
    name: string,
    type: T,
    records: RecordData[T][],
    options: { ad?: boolean; ttl?: number } = {},
  ): this {
    const key = owner(name, type);
    if (!this.#names.has(key)) this.#names.set(key, new Map());
    this.#names.get(key)!.set(type, { records: [...records], ad: options.ad, ttl: options.ttl });
    return this;
  }

  /** Removes one type of a name, or the whole name (then it is NXDOMAIN). */
  remove(name: string, type?: RecordType): this {
    const key = owner(name, type ?? "");
    if (type) this.#names.get(key)?.delete(type);
    else this.#names.delete(key);
    return this;
  }

  /** Makes queries for (name, type) — any type with "*" — throw a temporary DnsError (default SERVFAIL). */
  fail(name: string, type: RecordType | "*", error: DnsError | DnsErrorCode = "SERVFAIL"): this {
    const key = `${type} ${owner(name, type)}`;
    this.#failures.set(
      key,
      typeof error === "string"
        ? new DnsError(error, `${error} (test)`, { qname: name, qtype: type })
        : error,
    );
    return this;
  }

  /** Removes every failure set by `fail()`. */
  clearFailures(): this {
    this.#failures.clear();
    return this;
  }

  /** Answers from the table. */
  query<T extends RecordType>(
    name: string,
    type: T,
    options: QueryOptions = {},
  ): Promise<DnsAnswer<RecordData[T]>> {
    try {
      if (options.signal?.aborted) throw options.signal.reason;
      return Promise.resolve(this.#answer(normalizeName(name, type), type));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  #answer<T extends RecordType>(qname: string, type: T): DnsAnswer<RecordData[T]> {
    this.queries.push({ name: qname, type });
    let current = qname;
    let ad = true;
    let ttl = Infinity;
    const seen = new Set<string>();
    const done = (records: RecordData[T][], rcode: "NOERROR" | "NXDOMAIN", entry?: Entry) => ({
      records,
      ad: ad && (entry?.ad ?? this.ad),
      ttl: Math.min(ttl, entry?.ttl ?? this.ttl),
      rcode,
      name: current,
    });
    for (;;) {
      const failure = this.#failures.get(`${type} ${current}`) ?? this.#failures.get(`* ${current}`);
      if (failure) throw failure;
      const types = this.#names.get(current);
      if (!types) return done([], "NXDOMAIN");
      const own = types.get(type);
      if (own) {
        const records = [...own.records] as RecordData[T][];
        if (type === "MX") (records as MxRecord[]).sort(byPreference);
        return done(records, "NOERROR", own);
      }
      const alias = types.get("CNAME");
      if (type === "CNAME" || !alias?.records.length || seen.has(current)) return done([], "NOERROR");
      ad &&= alias.ad ?? this.ad;
      ttl = Math.min(ttl, alias.ttl ?? this.ttl);
      seen.add(current);
      current = normalizeName(alias.records[0] as string, type);
    }
  }
}
