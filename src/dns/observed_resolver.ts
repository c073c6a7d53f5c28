/** A Resolver that reports each lookup (type, outcome, latency) to an Observer and otherwise delegates. */

import type { Observer } from "../core/observer.ts";
import type { DnsAnswer, QueryOptions, RecordData, RecordType, Resolver } from "./resolver.ts";

/** Wraps `inner` so every lookup is counted and timed. */
export function observedResolver(inner: Resolver, observer: Observer): Resolver {
  const timed = async <T>(type: string, run: () => Promise<DnsAnswer<T>>): Promise<DnsAnswer<T>> => {
    const start = performance.now();
    try {
      const answer = await run();
      observer.dnsQuery(
        type,
        answer.rcode === "NXDOMAIN" ? "nxdomain" : "ok",
        (performance.now() - start) / 1000,
      );
      return answer;
    } catch (err) {
      observer.dnsQuery(type, "error", (performance.now() - start) / 1000);
      throw err;
    }
  };
  return {
    query<T extends RecordType>(
      name: string,
      type: T,
      options?: QueryOptions,
    ): Promise<DnsAnswer<RecordData[T]>> {
      return timed(type, () => inner.query(name, type, options));
    },
    mx: (name, options) => timed("MX", () => inner.mx(name, options)),
    a: (name, options) => timed("A", () => inner.a(name, options)),
    aaaa: (name, options) => timed("AAAA", () => inner.aaaa(name, options)),
    txt: (name, options) => timed("TXT", () => inner.txt(name, options)),
    ptr: (ip, options) => timed("PTR", () => inner.ptr(ip, options)),
    cname: (name, options) => timed("CNAME", () => inner.cname(name, options)),
    tlsa: (name, options) => timed("TLSA", () => inner.tlsa(name, options)),
  };
}
