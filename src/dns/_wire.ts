/**
 * DNS message wire format (RFC 1035 4, RFC 6891 EDNS0, RFC 3225 DO bit, RFC 4035 AD/CD bits) over the
 * `dns-packet` package, with the few typings Ferry relies on. Trusts nothing in a decoded message:
 * callers match ids and questions themselves. Private to the dns room.
 */

import { Buffer } from "node:buffer";
import dnsPacket from "dns-packet";

/** One resource record as decoded; `data` depends on `type` (see `dns-packet`). */
export interface WireRecord {
  name: string;
  type: string;
  class?: string;
  ttl?: number;
  data?: unknown;
}

/** A question as on the wire. */
export interface WireQuestion {
  name: string;
  type: string;
  class?: string;
}

/** A decoded DNS message. */
export interface WireMessage {
  id: number;
  type: "query" | "response";
  flags: number;
  rcode: string;
  flag_tc: boolean;
  flag_ad: boolean;
  flag_aa: boolean;
  questions: WireQuestion[];
  answers: WireRecord[];
  authorities: WireRecord[];
  additionals: WireRecord[];
}

/** What may be encoded: a query, or (in tests) a response with records. */
export interface WireEncodable {
  id: number;
  type: "query" | "response";
  flags?: number;
  questions: WireQuestion[];
  answers?: WireRecord[];
  authorities?: WireRecord[];
  additionals?: (WireRecord | WireOpt)[];
}

/** The EDNS0 OPT pseudo-record (RFC 6891). */
export interface WireOpt {
  type: "OPT";
  name: ".";
  udpPayloadSize: number;
  flags: number;
}

interface DnsPacketModule {
  encode(message: unknown): Buffer;
  decode(bytes: Buffer): unknown;
}

const packet = dnsPacket as unknown as DnsPacketModule;

/** Header flag bits (RFC 1035 4.1.1, RFC 4035 3.2). */
export const FLAG_RD = 0x0100;
/** Authentic Data: the resolver validated the answer (RFC 4035 3.2.3). */
export const FLAG_AD = 0x0020;
/** Checking Disabled (RFC 4035 3.2.2). */
export const FLAG_CD = 0x0010;
/** Truncated response (RFC 1035 4.1.1). */
export const FLAG_TC = 0x0200;
/** Response (QR). */
export const FLAG_QR = 0x8000;
/** EDNS0 DNSSEC OK bit (RFC 3225), in the OPT record's flags. */
export const EDNS_DO = 0x8000;

/** Encodes a message. */
export function encodeMessage(message: WireEncodable): Uint8Array {
  return new Uint8Array(packet.encode(message));
}

/**
 * Decodes a message; undefined when the bytes are not a well-formed DNS message. A truncated (TC) message
 * cut inside a record still yields its header and question, so the caller can retry over TCP.
 */
export function decodeMessage(bytes: Uint8Array): WireMessage | undefined {
  const whole = decodeWhole(bytes);
  if (whole || bytes.length < 12 || !(((bytes[2] << 8) | bytes[3]) & FLAG_TC)) return whole;
  const head = bytes.slice();
  head.fill(0, 6, 12); // no answer, authority or additional records
  return decodeWhole(head);
}

function decodeWhole(bytes: Uint8Array): WireMessage | undefined {
  try {
    const m = packet.decode(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)) as WireMessage;
    if (!m || typeof m.id !== "number" || !Array.isArray(m.questions)) return undefined;
    m.answers ??= [];
    m.authorities ??= [];
    m.additionals ??= [];
    return m;
  } catch {
    return undefined;
  }
}

/** Builds a recursive query with EDNS0 (DO set) and the AD bit set, so validating resolvers report AD (RFC 6840 5.7). */
export function encodeQuery(id: number, name: string, type: string, udpSize: number): Uint8Array {
  return encodeMessage({
    id,
    type: "query",
    flags: FLAG_RD | FLAG_AD,
    questions: [{ name, type, class: "IN" }],
    additionals: [{ type: "OPT", name: ".", udpPayloadSize: udpSize, flags: EDNS_DO }],
  });
}
