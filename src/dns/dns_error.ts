/**
 * The error a Resolver throws when it has no answer (RFC 1035 4.1.1 rcodes other than NOERROR/NXDOMAIN,
 * timeouts, bad responses). `temporary` tells callers to defer (4xx) rather than fail.
 */

/** Why a query had no answer. */
export type DnsErrorCode =
  | "SERVFAIL"
  | "REFUSED"
  | "FORMERR"
  | "NOTIMP"
  | "RCODE"
  | "TIMEOUT"
  | "NETWORK"
  | "BADRESPONSE"
  | "BADNAME";

/** A query that produced no usable answer. */
export class DnsError extends Error {
  /** Why (SERVFAIL, TIMEOUT, …) */
  readonly code: DnsErrorCode;
  /** True when trying again later may succeed; false only for questions that cannot be asked (BADNAME) */
  readonly temporary: boolean;
  /** The name asked */
  readonly qname: string;
  /** The type asked */
  readonly qtype: string;
  constructor(
    code: DnsErrorCode,
    message: string,
    options?: { qname?: string; qtype?: string; temporary?: boolean; cause?: unknown },
  ) {
    super(message, { cause: options?.cause });
    this.name = "DnsError";
    this.code = code;
    this.temporary = options?.temporary ?? code !== "BADNAME";
    this.qname = options?.qname ?? "";
    this.qtype = options?.qtype ?? "";
  }
}
