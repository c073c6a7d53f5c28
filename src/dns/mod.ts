/** The dns room: the Resolver contract, Ferry's DNS client, and an in-memory resolver for tests. */

export type {
  DnsAnswer,
  MxRecord,
  QueryOptions,
  RecordData,
  RecordType,
  Resolver,
  TlsaRecord,
} from "./resolver.ts";
export { DnsError, type DnsErrorCode } from "./dns_error.ts";
export { DnsClient, type DnsClientOptions, type DnsClientStats } from "./client.ts";
export { MemoryResolver, type MemoryResolverOptions, type MemoryTable } from "./memory_resolver.ts";
export { isLoopback, type Nameserver, type TrustAd, trustsAd } from "./nameserver.ts";
export { parseResolvConf, readResolvConf, type ResolvConf } from "./resolv_conf.ts";
export { reverseName } from "./reverse_name.ts";
export { DnsCache, type DnsCacheOptions } from "./cache.ts";
