/**
 * Ferry's DNS stub resolver (RFC 1035 over UDP with TCP fallback on TC, RFC 7766; EDNS0 RFC 6891 with
 * DO, RFC 3225; AD requested per RFC 6840 5.7; TTL cache with RFC 2308 negative caching). Trusts: the
 * configured recursive resolvers for data; their AD bit only per `trustsAd` (loopback or marked trusted).
 * Random query ids and source ports; responses must match id, question, server address and port (RFC 5452).
 */

import { DnsCache } from "./cache.ts";
import { DnsError, type DnsErrorCode } from "./dns_error.ts";
import { type Nameserver, type TrustAd, trustsAd } from "./nameserver.ts";
import { readResolvConf } from "./resolv_conf.ts";
import type { DnsAnswer, QueryOptions, RecordData, RecordType } from "./resolver.ts";
import { TypedLookups } from "./_typed_lookups.ts";
import { normalizeName } from "./_name.ts";
import { canonicalName, extractAnswer } from "./_extract.ts";
import { encodeQuery, type WireMessage } from "./_wire.ts";
import { tcpExchange, udpExchange } from "./_transport.ts";

/** Options for `DnsClient`. Durations are milliseconds, TTLs seconds. */
export interface DnsClientOptions {
  /** Resolvers to ask, in order (default: the `nameserver` lines of `resolvConf`) */
  nameservers?: Nameserver[];
  /** resolv.conf path read when `nameservers` is not given (default /etc/resolv.conf) */
  resolvConf?: string;
  /** Wait per try (default: resolv.conf `timeout`, else 2000) */
  timeout?: number;
  /** Rounds over the servers (default: resolv.conf `attempts`, else 2) */
  attempts?: number;
  /** Whose AD bit to believe (default "loopback": loopback or `trusted` servers) */
  trustAd?: TrustAd;
  /** EDNS0 UDP payload size advertised (default 1232; larger answers come by TCP) */
  udpSize?: number;
  /** Answers cached; 0 disables the cache (default 10000) */
  cacheSize?: number;
  /** Highest TTL kept for data (default 86400) */
  maxTtl?: number;
  /** Highest TTL kept for NXDOMAIN/NODATA (default 3600) */
  maxNegativeTtl?: number;
  /** Clock in milliseconds for the cache (default `Date.now`) */
  now?: () => number;
}

/** Counters since the client was made. */
export interface DnsClientStats {
  /** Queries sent over UDP (every try counts) */
  udp: number;
  /** Queries repeated over TCP after a truncated UDP answer */
  tcp: number;
  /** Answers served from the cache */
  cacheHits: number;
}

interface Settings {
  servers: Nameserver[];
  timeout: number;
  attempts: number;
  rotate: boolean;
}

const HARD_RCODES: Record<string, DnsErrorCode> = {
  SERVFAIL: "SERVFAIL",
  REFUSED: "REFUSED",
  FORMERR: "FORMERR",
  NOTIMP: "NOTIMP",
};

const TYPES = new Set<string>(["A", "AAAA", "MX", "TXT", "PTR", "CNAME", "TLSA"]);

/** A Resolver that talks to recursive resolvers over UDP/TCP and caches answers. */
export class DnsClient extends TypedLookups {
  #options: DnsClientOptions;
  #settings: Promise<Settings> | undefined;
  #cache: DnsCache | undefined;
  #inflight = new Map<string, Promise<DnsAnswer<unknown>>>();
  #stats: DnsClientStats = { udp: 0, tcp: 0, cacheHits: 0 };
  #next = 0;

  /** Creates a client; resolv.conf is read on the first query. */
  constructor(options: DnsClientOptions = {}) {
    super();
    this.#options = options;
    const size = options.cacheSize ?? 10000;
    if (size > 0) this.#cache = new DnsCache({ maxEntries: size, now: options.now });
  }

  /** Query counters (a copy). */
  get stats(): DnsClientStats {
    return { ...this.#stats };
  }

  /** Empties the answer cache. */
  clearCache(): void {
    this.#cache?.clear();
  }

  /** Asks for (name, type), from the cache when a live answer is there. */
  query<T extends RecordType>(
    name: string,
    type: T,
    options: QueryOptions = {},
  ): Promise<DnsAnswer<RecordData[T]>> {
    if (!TYPES.has(type)) {
      return Promise.reject(
        new DnsError("BADNAME", `Unsupported record type "${type}"`, { qname: name, qtype: type }),
      );
    }
    let qname: string;
    try {
      qname = normalizeName(name, type);
    } catch (err) {
      return Promise.reject(err);
    }
    const hit = this.#cache?.get<RecordData[T]>(qname, type);
    if (hit) {
      this.#stats.cacheHits++;
      return Promise.resolve(hit);
    }
    // A query with its own signal runs alone so that aborting it stops its I/O; others share one query.
    if (options.signal) return this.#resolve(qname, type, options.signal);
    const key = `${type} ${qname}`;
    let shared = this.#inflight.get(key) as Promise<DnsAnswer<RecordData[T]>> | undefined;
    if (!shared) {
      shared = this.#resolve(qname, type).finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, shared);
    }
    return shared.then((a) => ({ ...a, records: [...a.records] }));
  }

  #config(): Promise<Settings> {
    this.#settings ??= (async () => {
      const o = this.#options;
      const conf = o.nameservers?.length ? undefined : await readResolvConf(o.resolvConf);
      return {
        servers: o.nameservers?.length ? o.nameservers : conf!.nameservers,
        timeout: o.timeout ?? conf?.timeout ?? 2000,
        attempts: Math.max(1, o.attempts ?? conf?.attempts ?? 2),
        rotate: conf?.rotate ?? false,
      };
    })();
    this.#settings.catch(() => this.#settings = undefined); // a failed read is retried by the next query
    return this.#settings;
  }

  async #resolve<T extends RecordType>(
    qname: string,
    type: T,
    signal?: AbortSignal,
  ): Promise<DnsAnswer<RecordData[T]>> {
    const s = await this.#config();
    const start = s.rotate ? this.#next++ % s.servers.length : 0;
    const answered = new Set<number>(); // servers that gave a final error rcode: not asked again
    let last: DnsError | undefined;
    for (let round = 0; round < s.attempts; round++) {
      for (let k = 0; k < s.servers.length; k++) {
        const i = (start + k) % s.servers.length;
        if (answered.has(i)) continue;
        const server = s.servers[i];
        let msg: WireMessage;
        try {
          msg = await this.#ask(server, qname, type, s.timeout, signal);
        } catch (err) {
          if (signal?.aborted || !(err instanceof DnsError)) throw err;
          last = err;
          continue;
        }
        if (msg.rcode === "NOERROR" || msg.rcode === "NXDOMAIN") {
          const answer = extractAnswer(msg, qname, type, {
            maxTtl: this.#options.maxTtl ?? 86400,
            maxNegativeTtl: this.#options.maxNegativeTtl ?? 3600,
          });
          answer.ad = answer.ad && trustsAd(server, this.#options.trustAd);
          this.#cache?.set(qname, type, answer);
          return answer;
        }
        answered.add(i);
        last = new DnsError(HARD_RCODES[msg.rcode] ?? "RCODE", `${msg.rcode} from ${server.address}`);
      }
    }
    const why = last ?? new DnsError("NETWORK", "No nameserver to ask");
    throw new DnsError(why.code, `${type} lookup of "${qname}" failed: ${why.message}`, {
      qname,
      qtype: type,
      temporary: why.temporary,
      cause: why.cause ?? why,
    });
  }

  async #ask(
    server: Nameserver,
    qname: string,
    type: string,
    timeout: number,
    signal: AbortSignal | undefined,
  ): Promise<WireMessage> {
    const id = crypto.getRandomValues(new Uint16Array(1))[0];
    const query = encodeQuery(id, qname, type, this.#options.udpSize ?? 1232);
    const matches = (m: WireMessage) =>
      m.id === id && m.questions.length === 1 && canonicalName(m.questions[0].name) === qname &&
      m.questions[0].type === type && (m.questions[0].class ?? "IN") === "IN";
    const ex = {
      address: server.address,
      port: server.port ?? 53,
      timeout,
      signal,
      matches,
      label: `${type} ${qname}`,
    };
    this.#stats.udp++;
    const msg = await udpExchange(query, ex);
    if (!msg.flag_tc) return msg;
    this.#stats.tcp++;
    return await tcpExchange(query, ex);
  }
}
