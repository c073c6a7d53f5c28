/** A Resolver that passes one AbortSignal to every query (a policy stage's deadline) unless given another. */

import type { DnsAnswer, QueryOptions, RecordData, RecordType, Resolver } from "./resolver.ts";
import { TypedLookups } from "./_typed_lookups.ts";

/** Wraps `inner` so each query is abandoned when `signal` aborts. */
export class BoundResolver extends TypedLookups {
  #inner: Resolver;
  #signal: AbortSignal;

  constructor(inner: Resolver, signal: AbortSignal) {
    super();
    this.#inner = inner;
    this.#signal = signal;
  }

  /** Asks the wrapped resolver with this resolver's signal (or both, when the caller gives one). */
  query<T extends RecordType>(
    name: string,
    type: T,
    options: QueryOptions = {},
  ): Promise<DnsAnswer<RecordData[T]>> {
    const signal = options.signal ? AbortSignal.any([options.signal, this.#signal]) : this.#signal;
    return this.#inner.query(name, type, { ...options, signal });
  }
}
