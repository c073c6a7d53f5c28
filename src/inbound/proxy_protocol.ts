/**
 * Parses the PROXY protocol header, versions 1 (text) and 2 (binary), as specified in HAProxy's
 * `doc/proxy-protocol.txt` (2020 revision), including its TLVs, the SSL sub-TLVs and the CRC32c check.
 * Pure: bytes in, a verdict out, no I/O. It trusts nothing in the bytes; whether to believe a valid header
 * at all is the caller's decision (only peers in `proxyRequiredHosts`).
 */

import { formatIp, parseIp } from "../core/ip.ts";

/** One end of the proxied connection as the proxy saw it. */
export interface ProxyEndpoint {
  /** The address, IPv4 dotted quad or RFC 5952 IPv6 text. */
  ip: string;
  /** The TCP port, 0–65535. */
  port: number;
}

/** One type-length-value record from a v2 header (v1 has none). */
export interface ProxyTlv {
  /** The record type, e.g. 0x01 ALPN, 0x02 AUTHORITY, 0x03 CRC32C, 0x04 NOOP, 0x05 UNIQUE_ID, 0x20 SSL. */
  type: number;
  /** The value bytes, a view into the parsed buffer. */
  value: Uint8Array;
}

/** The address family and transport the proxy reports; "UNKNOWN" means "use the real connection endpoints". */
export type ProxyFamily = "TCP4" | "TCP6" | "UNIX" | "UNKNOWN";

/** A parsed, valid PROXY header. */
export interface ProxyHeader {
  /** 1 for the text form, 2 for the binary form. */
  version: 1 | 2;
  /** "PROXY" carries the client's addresses; "LOCAL" (v2 only, health checks) carries none. */
  command: "PROXY" | "LOCAL";
  /** What the addresses are; always "UNKNOWN" for LOCAL, whose address block the spec says to ignore. */
  family: ProxyFamily;
  /** The client that connected to the proxy (TCP4/TCP6 only). */
  source?: ProxyEndpoint;
  /** The proxy address the client connected to (TCP4/TCP6 only). */
  destination?: ProxyEndpoint;
  /** Socket paths for family UNIX (v2 only), up to the first NUL. */
  unix?: { source: string; destination: string };
  /** The v2 TLVs in order (empty for v1 and LOCAL). A CRC32C TLV, if present, has been verified. */
  tlvs: ProxyTlv[];
}

/** The verdict on a buffer that should start with a PROXY header. */
export type ParseResult =
  | { kind: "incomplete" }
  | { kind: "invalid"; reason: string }
  | { kind: "ok"; header: ProxyHeader; length: number };

/** Options for {@link parseProxyHeader}. */
export interface ParseProxyOptions {
  /** Largest v2 header accepted, in bytes including the 16-byte fixed part (default 1536). */
  maxLength?: number;
}

/** The longest v1 header the spec allows, CRLF included. */
export const PROXY_V1_MAX_LENGTH = 107;
/** Ferry's default cap on a whole v2 header (the spec allows up to 16 + 65535). */
export const PROXY_V2_DEFAULT_MAX_LENGTH = 1536;
/** The 12-byte v2 signature: "\r\n\r\n\0\r\nQUIT\n". */
export const PROXY_V2_SIGNATURE: Uint8Array = new TextEncoder().encode("\r\n\r\n\0\r\nQUIT\n");

/** Well-known v2 TLV types (spec section 2.2). */
export const PP2_TYPE = {
  ALPN: 0x01,
  AUTHORITY: 0x02,
  CRC32C: 0x03,
  NOOP: 0x04,
  UNIQUE_ID: 0x05,
  SSL: 0x20,
  NETNS: 0x30,
} as const;

const V1_PREFIX = new TextEncoder().encode("PROXY ");
const CR = 0x0d, LF = 0x0a;

/**
 * Parses the PROXY header at the start of `buf`. Says "incomplete" while the bytes so far could still
 * become a valid header, "invalid" as soon as they cannot, and "ok" with the header and the number of
 * bytes it occupies; bytes after `length` are not looked at.
 */
export function parseProxyHeader(buf: Uint8Array, options: ParseProxyOptions = {}): ParseResult {
  if (buf.length === 0) return { kind: "incomplete" };
  if (buf[0] === V1_PREFIX[0]) return parseV1(buf);
  if (buf[0] === PROXY_V2_SIGNATURE[0]) return parseV2(buf, options.maxLength ?? PROXY_V2_DEFAULT_MAX_LENGTH);
  return invalid("not a PROXY protocol header");
}

function invalid(reason: string): ParseResult {
  return { kind: "invalid", reason };
}

// ---- version 1 -------------------------------------------------------------------------------------------

function parseV1(buf: Uint8Array): ParseResult {
  const n = Math.min(buf.length, V1_PREFIX.length);
  for (let i = 0; i < n; i++) {
    if (buf[i] !== V1_PREFIX[i]) return invalid("not a PROXY protocol header");
  }
  // Find the LF within the allowed 107 bytes, refusing anything that is not printable ASCII on the way.
  const limit = Math.min(buf.length, PROXY_V1_MAX_LENGTH);
  let lf = -1;
  for (let i = 0; i < limit; i++) {
    const b = buf[i];
    if (b === LF) {
      lf = i;
      break;
    }
    if (b === CR) {
      if (i + 1 < buf.length && buf[i + 1] !== LF) return invalid("v1 header has a CR not followed by LF");
      continue;
    }
    if (b < 0x20 || b > 0x7e) return invalid("v1 header contains a non-printable byte");
  }
  if (lf < 0) {
    return buf.length >= PROXY_V1_MAX_LENGTH
      ? invalid(`v1 header has no CRLF within ${PROXY_V1_MAX_LENGTH} bytes`)
      : { kind: "incomplete" };
  }
  if (lf === 0 || buf[lf - 1] !== CR) return invalid("v1 header ends in a bare LF");
  const line = String.fromCharCode(...buf.subarray(0, lf - 1));
  const length = lf + 1;

  const rest = line.slice(V1_PREFIX.length);
  const sp = rest.indexOf(" ");
  const proto = sp < 0 ? rest : rest.slice(0, sp);
  if (proto === "UNKNOWN") {
    // The spec: with UNKNOWN the receiver ignores everything up to the CRLF and uses the real endpoints.
    return { kind: "ok", length, header: { version: 1, command: "PROXY", family: "UNKNOWN", tlvs: [] } };
  }
  if (proto !== "TCP4" && proto !== "TCP6") return invalid(`v1 header has unknown protocol "${proto}"`);
  if (sp < 0) return invalid("v1 header has no addresses");
  const fields = rest.slice(sp + 1).split(" ");
  if (fields.length !== 4) return invalid("v1 header needs exactly four fields after the protocol");
  if (fields.some((f) => f === "")) return invalid("v1 header fields must be separated by single spaces");
  const [srcText, dstText, sportText, dportText] = fields;
  const src = v1Address(proto, srcText);
  const dst = v1Address(proto, dstText);
  if (!src) return invalid(`v1 header has a bad ${proto} source address "${srcText}"`);
  if (!dst) return invalid(`v1 header has a bad ${proto} destination address "${dstText}"`);
  const sport = v1Port(sportText);
  const dport = v1Port(dportText);
  if (sport === undefined) return invalid(`v1 header has a bad source port "${sportText}"`);
  if (dport === undefined) return invalid(`v1 header has a bad destination port "${dportText}"`);
  return {
    kind: "ok",
    length,
    header: {
      version: 1,
      command: "PROXY",
      family: proto,
      source: { ip: formatIp(src), port: sport },
      destination: { ip: formatIp(dst), port: dport },
      tlvs: [],
    },
  };
}

function v1Address(proto: "TCP4" | "TCP6", text: string): Uint8Array | undefined {
  // parseIp also takes "[...]"; the v1 grammar does not.
  if (proto === "TCP4") {
    if (!/^[0-9.]+$/.test(text)) return undefined;
    const b = parseIp(text);
    return b?.length === 4 ? b : undefined;
  }
  if (!/^[0-9A-Fa-f:.]+$/.test(text) || !text.includes(":")) return undefined;
  const b = parseIp(text);
  return b?.length === 16 ? b : undefined;
}

function v1Port(text: string): number | undefined {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text)) return undefined;
  const n = Number(text);
  return n <= 65535 ? n : undefined;
}

// ---- version 2 -------------------------------------------------------------------------------------------

/** The family/protocol byte values the spec defines; anything else must be dropped. */
const V2_FAMILIES = new Set([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32]);

function parseV2(buf: Uint8Array, maxLength: number): ParseResult {
  const n = Math.min(buf.length, PROXY_V2_SIGNATURE.length);
  for (let i = 0; i < n; i++) {
    if (buf[i] !== PROXY_V2_SIGNATURE[i]) return invalid("bad PROXY v2 signature");
  }
  // Judge each fixed byte as soon as it is here, so a bad header is refused without waiting for more.
  if (buf.length > 12) {
    const verCmd = buf[12];
    if (verCmd >> 4 !== 2) return invalid(`v2 header has version ${verCmd >> 4}, expected 2`);
    if ((verCmd & 0x0f) > 1) return invalid(`v2 header has unknown command ${verCmd & 0x0f}`);
  }
  if (buf.length > 13 && !V2_FAMILIES.has(buf[13])) {
    return invalid(`v2 header has unknown family/protocol 0x${buf[13].toString(16).padStart(2, "0")}`);
  }
  if (buf.length < 16) return { kind: "incomplete" };
  const declared = (buf[14] << 8) | buf[15];
  const length = 16 + declared;
  if (length > maxLength) return invalid(`v2 header of ${length} bytes exceeds the limit of ${maxLength}`);
  if (buf.length < length) return { kind: "incomplete" };

  const command = (buf[12] & 0x0f) === 1 ? "PROXY" : "LOCAL";
  const fam = buf[13];
  // Never look past the declared end, whatever follows in `buf`.
  const header = buf.subarray(0, length);

  if (command === "LOCAL") {
    // Health checks from the proxy itself: the spec says to discard the whole address block.
    return { kind: "ok", length, header: { version: 2, command, family: "UNKNOWN", tlvs: [] } };
  }
  if ((fam & 0x0f) === 0x02) return invalid("v2 header announces a datagram (UDP) connection");

  let addrLen = 0;
  const out: ProxyHeader = { version: 2, command, family: "UNKNOWN", tlvs: [] };
  if (fam === 0x11) {
    addrLen = 12;
    if (declared < addrLen) return invalid("v2 header too short for IPv4 addresses");
    out.family = "TCP4";
    out.source = { ip: formatIp(header.slice(16, 20)), port: u16(header, 24) };
    out.destination = { ip: formatIp(header.slice(20, 24)), port: u16(header, 26) };
  } else if (fam === 0x21) {
    addrLen = 36;
    if (declared < addrLen) return invalid("v2 header too short for IPv6 addresses");
    out.family = "TCP6";
    out.source = { ip: formatIp(header.slice(16, 32)), port: u16(header, 48) };
    out.destination = { ip: formatIp(header.slice(32, 48)), port: u16(header, 50) };
  } else if (fam === 0x31) {
    addrLen = 216;
    if (declared < addrLen) return invalid("v2 header too short for UNIX addresses");
    out.family = "UNIX";
    out.unix = {
      source: unixPath(header.subarray(16, 124)),
      destination: unixPath(header.subarray(124, 232)),
    };
  }
  // fam 0x00 (UNSPEC) with PROXY: accepted like v1 UNKNOWN, no addresses; the block is all TLVs.

  const tlvs = parseTlvs(header.subarray(16 + addrLen));
  if (typeof tlvs === "string") return invalid(tlvs);
  out.tlvs = tlvs;

  const crc = tlvs.find((t) => t.type === PP2_TYPE.CRC32C);
  if (crc) {
    if (crc.value.length !== 4) return invalid("v2 CRC32C TLV must be 4 bytes");
    const copy = header.slice();
    const at = crc.value.byteOffset - header.byteOffset;
    copy.fill(0, at, at + 4);
    const want = ((crc.value[0] << 24) | (crc.value[1] << 16) | (crc.value[2] << 8) | crc.value[3]) >>> 0;
    if (crc32c(copy) !== want) return invalid("v2 header CRC32C checksum mismatch");
  }
  const ssl = tlvs.find((t) => t.type === PP2_TYPE.SSL);
  if (ssl && parseSslTlv(ssl.value) === undefined) return invalid("v2 SSL TLV is malformed");
  return { kind: "ok", length, header: out };
}

function u16(b: Uint8Array, at: number): number {
  return (b[at] << 8) | b[at + 1];
}

function unixPath(b: Uint8Array): string {
  const nul = b.indexOf(0);
  return new TextDecoder().decode(nul < 0 ? b : b.subarray(0, nul));
}

/** TLVs filling `block` exactly; a string names the defect. */
function parseTlvs(block: Uint8Array): ProxyTlv[] | string {
  const out: ProxyTlv[] = [];
  let at = 0;
  while (at < block.length) {
    if (block.length - at < 3) return "v2 header ends inside a TLV header";
    const type = block[at];
    const len = u16(block, at + 1);
    if (at + 3 + len > block.length) return `v2 TLV 0x${type.toString(16)} runs past the end of the header`;
    out.push({ type, value: block.subarray(at + 3, at + 3 + len) });
    at += 3 + len;
  }
  return out;
}

/** The content of a PP2_TYPE_SSL (0x20) TLV. */
export interface ProxySslInfo {
  /** Bit field: 0x01 client used SSL/TLS, 0x02 sent a certificate on this connection, 0x04 in the session. */
  client: number;
  /** 0 when the client presented a certificate that verified, non-zero otherwise. */
  verify: number;
  /** Sub-TLVs: 0x21 VERSION, 0x22 CN, 0x23 CIPHER, 0x24 SIG_ALG, 0x25 KEY_ALG. */
  tlvs: ProxyTlv[];
}

/** Decodes the value of an SSL TLV; undefined when it is malformed (too short, or a sub-TLV overruns). */
export function parseSslTlv(value: Uint8Array): ProxySslInfo | undefined {
  if (value.length < 5) return undefined;
  const verify = ((value[1] << 24) | (value[2] << 16) | (value[3] << 8) | value[4]) >>> 0;
  const tlvs = parseTlvs(value.subarray(5));
  if (typeof tlvs === "string") return undefined;
  return { client: value[0], verify, tlvs };
}

let crcTable: Uint32Array | undefined;

/** CRC32c (Castagnoli, reflected polynomial 0x82F63B78), as the spec's PP2_TYPE_CRC32C requires. */
export function crc32c(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let i = 0; i < 256; i++) {
      let c = i;
      for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
      crcTable[i] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const b of data) crc = crcTable[(crc ^ b) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}
