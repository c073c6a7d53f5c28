/**
 * DKIM canonicalization and signature assembly (RFC 6376 3.4 relaxed/relaxed, 3.5, 3.7; RFC 8463 for
 * ed25519-sha256), written for signing because mailauth drops repeated names from h= and so cannot over-sign
 * (list a field once more than it occurs, so that an added copy breaks the signature, RFC 6376 8.15).
 */

import { Buffer } from "node:buffer";
import { createHash, type KeyObject, sign } from "node:crypto";
import { headerEnd } from "../../core/headers.ts";
import { rawFields } from "../../core/header_edit.ts";

/**
 * The octets as a string of code points 0–255, one per octet, so that `charCodeAt` gives each octet back.
 * Not `TextDecoder("latin1")`: the Encoding Standard makes that label windows-1252, which maps 0x80–0x9F to
 * other code points (0x9C → U+0153), and a UTF-8 field or body with such an octet (✉, Ü, €) was hashed wrongly.
 */
export function octetString(bytes: Uint8Array): string {
  // Node's "latin1" is ISO-8859-1 proper: each octet becomes the code point of the same value.
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("latin1");
}

/** The inverse of `octetString`: each code point (0–255) as one octet. */
function octets(text: string): Uint8Array {
  const b = Buffer.from(text, "latin1");
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** The relaxed body canonicalization (RFC 6376 3.4.4) of the message body. */
export function relaxedBody(message: Uint8Array): Uint8Array {
  const body = message.subarray(headerEnd(message));
  const lines = octetString(body).split(/\r\n/);
  // A final CRLF leaves an empty last element: it is the end of the last line, not a line.
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  const out = lines.map((l) => l.replace(/[ \t]+/g, " ").replace(/ $/, ""));
  while (out.length && out[out.length - 1] === "") out.pop();
  const text = out.length ? out.join("\r\n") + "\r\n" : "";
  return octets(text);
}

/** The relaxed header canonicalization (RFC 6376 3.4.2) of one raw field (name through final CRLF). */
export function relaxedHeader(raw: string): string {
  const colon = raw.indexOf(":");
  const name = raw.slice(0, colon).trim().toLowerCase();
  const value = raw.slice(colon + 1).replace(/\r\n/g, "").replace(/[ \t]+/g, " ").trim();
  return `${name}:${value}`;
}

/** Raw header fields as octet strings (see `octetString`) with lower-case names. */
export function headerFields(message: Uint8Array): { key: string; raw: string }[] {
  return rawFields(message).map((f) => ({
    key: f.name.toLowerCase(),
    raw: octetString(message.subarray(f.start, f.end)),
  }));
}

/** The h= list: each name as often as it occurs plus once more (over-signing). */
export function overSignedNames(fields: readonly { key: string }[], names: readonly string[]): string[] {
  const out: string[] = [];
  for (const name of names) {
    const n = fields.filter((f) => f.key === name.toLowerCase()).length;
    for (let i = 0; i <= n; i++) out.push(name);
  }
  return out;
}

/** Selects the fields h= names, bottom-up per name (RFC 6376 5.4.2); a name with no field left adds nothing. */
export function signedFields(
  fields: readonly { key: string; raw: string }[],
  h: readonly string[],
): string[] {
  const used = new Set<number>();
  const out: string[] = [];
  for (const name of h) {
    const key = name.toLowerCase();
    for (let i = fields.length - 1; i >= 0; i--) {
      if (!used.has(i) && fields[i].key === key) {
        used.add(i);
        out.push(fields[i].raw);
        break;
      }
    }
  }
  return out;
}

/** What a signature needs. */
export interface SignParams {
  domain: string;
  selector: string;
  key: KeyObject;
  algorithm: "rsa-sha256" | "ed25519-sha256";
  /** Header field names to sign (each over-signed) */
  headers: readonly string[];
  /** Signature time (seconds since the epoch) */
  time: number;
}

/** Folds a tag list to lines of at most ~76 characters (only at tag boundaries and inside b=/bh=/h=). */
function fold(tags: string[]): string {
  let out = "";
  let line = "DKIM-Signature:".length;
  for (const [i, tag] of tags.entries()) {
    const piece = " " + tag + (i < tags.length - 1 ? ";" : "");
    if (line + piece.length > 76 && line > 0) {
      out += "\r\n\t" + piece.trimStart();
      line = 8 + piece.length;
    } else {
      out += piece;
      line += piece.length;
    }
  }
  return out;
}

/** Returns the value of a DKIM-Signature field (after "DKIM-Signature:") signing `message`. */
export function dkimSignatureValue(message: Uint8Array, p: SignParams): string {
  const fields = headerFields(message);
  const h = overSignedNames(fields, p.headers);
  const bh = createHash("sha256").update(relaxedBody(message)).digest("base64");
  const tags = [
    "v=1",
    `a=${p.algorithm}`,
    "c=relaxed/relaxed",
    `d=${p.domain}`,
    `s=${p.selector}`,
    `t=${p.time}`,
    `h=${h.join(":")}`,
    `bh=${bh}`,
    "b=",
  ];
  const unsigned = fold(tags);
  const data = signedFields(fields, h).map((raw) => relaxedHeader(raw) + "\r\n").join("") +
    relaxedHeader(`DKIM-Signature:${unsigned}`);
  const bytes = octets(data);
  const b = p.algorithm === "rsa-sha256"
    ? sign("sha256", bytes, p.key).toString("base64")
    // RFC 8463 3: Ed25519 signs the SHA-256 hash of the data (PureEdDSA over the digest).
    : sign(null, createHash("sha256").update(bytes).digest(), p.key).toString("base64");
  // b= is folded into the last line; verifiers remove whitespace from it.
  return unsigned + b.replace(/(.{1,72})/g, "$1\r\n\t").replace(/\r\n\t$/, "");
}
