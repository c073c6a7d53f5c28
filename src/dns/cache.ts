/**
 * A bounded DNS answer cache: entries live for their TTL (RFC 1035 3.2.1; negative answers for their
 * RFC 2308 TTL), are never served stale, and the least recently used entry goes first when full.
 * Trusts the TTLs it is given (the client has capped them).
 */

import type { DnsAnswer } from "./resolver.ts";

/** Options for `DnsCache`. */
export interface DnsCacheOptions {
  /** Most entries kept (default 10000) */
  maxEntries?: number;
  /** Clock in milliseconds (default `Date.now`); tests move it */
  now?: () => number;
}

interface Entry {
  answer: DnsAnswer<unknown>;
  expires: number;
}

/** Answers keyed by (name, type), each kept for its TTL. */
export class DnsCache {
  #entries = new Map<string, Entry>();
  #max: number;
  #now: () => number;

  /** Creates an empty cache. */
  constructor(options: DnsCacheOptions = {}) {
    this.#max = Math.max(1, options.maxEntries ?? 10000);
    this.#now = options.now ?? Date.now;
  }

  /** Number of entries held (expired ones included until touched or evicted). */
  get size(): number {
    return this.#entries.size;
  }

  /** A live answer for (name, type) with its TTL counted down; undefined when absent or expired. */
  get<T>(name: string, type: string): DnsAnswer<T> | undefined {
    const key = `${type} ${name}`;
    const e = this.#entries.get(key);
    if (!e) return undefined;
    const left = e.expires - this.#now();
    if (left <= 0) {
      this.#entries.delete(key);
      return undefined;
    }
    this.#entries.delete(key);
    this.#entries.set(key, e);
    return { ...e.answer, records: [...e.answer.records], ttl: Math.floor(left / 1000) } as DnsAnswer<T>;
  }

  /** Stores an answer for its `ttl` seconds; a TTL of 0 stores nothing. */
  set(name: string, type: string, answer: DnsAnswer<unknown>): void {
    if (!(answer.ttl > 0)) return;
    const key = `${type} ${name}`;
    this.#entries.delete(key);
    this.#entries.set(key, {
      answer: { ...answer, records: [...answer.records] },
      expires: this.#now() + answer.ttl * 1000,
    });
    while (this.#entries.size > this.#max) {
      const oldest = this.#entries.keys().next().value as string;
      this.#entries.delete(oldest);
    }
  }

  /** Forgets everything. */
  clear(): void {
    this.#entries.clear();
  }
}
