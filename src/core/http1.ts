/**
 * Reading an HTTP/1.1 response that ends with its connection (`Connection: close`), for Ferry's own HTTPS
 * clients on its TLS client (MTA-STS policy fetches, the queue command over HTTPS): the status line, the
 * header fields, and the body as framed (RFC 9112 §6: chunked, Content-Length, or up to the close).
 */

import { concatBytes } from "./bytes.ts";

const dec = new TextDecoder();

/** A response split at the end of its header section. */
export interface Http1Response {
  statusLine: string;
  /** The status code; undefined when the first line is not an HTTP/1.x status line */
  status: number | undefined;
  /** Field names in lower case; of a field given twice, the last */
  headers: Map<string, string>;
  /** What follows the header section, as framed */
  rest: Uint8Array;
}

/** Why a body's framing is wrong: a chunked body that does not parse, or one shorter than its Content-Length. */
export class Http1FramingError extends Error {
  constructor(readonly framing: "chunked" | "length", message: string) {
    super(message);
    this.name = "Http1FramingError";
  }
}

/** Splits `raw` (the whole response) at the end of its header section; undefined when that never comes. */
export function splitResponse(raw: Uint8Array): Http1Response | undefined {
  let head = -1;
  for (let i = 0; i + 3 < raw.length; i++) {
    if (raw[i] === 13 && raw[i + 1] === 10 && raw[i + 2] === 13 && raw[i + 3] === 10) {
      head = i;
      break;
    }
  }
  if (head < 0) return undefined;
  const lines = dec.decode(raw.subarray(0, head)).split("\r\n");
  const code = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0])?.[1];
  const headers = new Map<string, string>();
  for (const l of lines.slice(1)) {
    const c = l.indexOf(":");
    if (c > 0) headers.set(l.slice(0, c).trim().toLowerCase(), l.slice(c + 1).trim());
  }
  return {
    statusLine: lines[0],
    status: code === undefined ? undefined : Number(code),
    headers,
    rest: raw.subarray(head + 4),
  };
}

/** The body of `res`: a chunked one decoded, one with Content-Length cut to it; throws Http1FramingError. */
export function responseBody(res: Http1Response): Uint8Array {
  if ((res.headers.get("transfer-encoding") ?? "").toLowerCase().includes("chunked")) {
    return dechunk(res.rest);
  }
  if (!res.headers.has("content-length")) return res.rest;
  const length = Number(res.headers.get("content-length"));
  if (!Number.isInteger(length) || length > res.rest.length) {
    throw new Http1FramingError("length", "truncated response");
  }
  return res.rest.subarray(0, length);
}

/** Decodes a chunked body (RFC 9112 §7.1). */
function dechunk(body: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  let i = 0;
  for (;;) {
    let eol = i;
    while (eol + 1 < body.length && !(body[eol] === 13 && body[eol + 1] === 10)) eol++;
    if (eol + 1 >= body.length) throw new Http1FramingError("chunked", "truncated chunk size");
    const size = parseInt(dec.decode(body.subarray(i, eol)).split(";")[0].trim(), 16);
    if (!Number.isFinite(size) || size < 0) throw new Http1FramingError("chunked", "bad chunk size");
    i = eol + 2;
    if (size === 0) return concatBytes(parts);
    if (i + size > body.length) throw new Http1FramingError("chunked", "truncated chunk");
    parts.push(body.subarray(i, i + size));
    i += size + 2;
  }
}
