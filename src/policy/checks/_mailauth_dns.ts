/**
 * Ferry's Resolver in the shape mailauth expects (node's `dns.resolve(name, type)`): TXT as arrays of strings,
 * MX as `{ exchange, priority }`, and node's error codes — NXDOMAIN → ENOTFOUND, NODATA → ENODATA, a timeout
 * → ETIMEOUT, a name that cannot be asked → EBADNAME, other failures → ESERVFAIL (temporary).
 */

import { DnsError } from "../../dns/dns_error.ts";
import type { RecordType, Resolver } from "../../dns/resolver.ts";

/** mailauth's resolver signature (its types want string[] | string[][], but MX answers are objects). */
// deno-lint-ignore no-explicit-any
export type MailauthResolver = (name: string, type: string) => Promise<any[]>;

function nodeError(code: string, message: string): Error & { code: string } {
  const err = new Error(message) as Error & { code: string };
  err.code = code;
  return err;
}

const CODES: Record<string, string> = { TIMEOUT: "ETIMEOUT", BADNAME: "EBADNAME", REFUSED: "EREFUSED" };

/** Adapts `resolver` for mailauth; every query goes through it (and so through its signal and cache). */
export function mailauthResolver(resolver: Resolver): MailauthResolver {
  return async (name, type) => {
    const t = type.toUpperCase() as RecordType;
    if (!["A", "AAAA", "MX", "TXT", "PTR", "CNAME"].includes(t)) {
      throw nodeError("ENOTIMP", `record type ${type} is not supported`);
    }
    let answer;
    try {
      // PTR questions come from mailauth as reverse names already.
      answer = await resolver.query(name, t);
    } catch (err) {
      if (err instanceof DnsError) {
        throw nodeError(CODES[err.code] ?? "ESERVFAIL", `${err.message} (${name} ${type})`);
      }
      throw nodeError("ESERVFAIL", `${(err as Error)?.message ?? err} (${name} ${type})`);
    }
    if (answer.rcode === "NXDOMAIN") throw nodeError("ENOTFOUND", `${name} does not exist`);
    if (answer.records.length === 0) throw nodeError("ENODATA", `${name} has no ${type} records`);
    switch (t) {
      case "TXT":
        return (answer.records as string[]).map((s) => [s]);
      case "MX":
        return (answer.records as { exchange: string; preference: number }[]).map((m) => ({
          exchange: m.exchange,
          priority: m.preference,
        }));
      default:
        return answer.records;
    }
  };
}
