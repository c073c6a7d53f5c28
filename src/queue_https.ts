/**
 * The queue command's transport to an admin listener on HTTPS when a CA file is named (`--ca`,
 * `FERRY_ADMIN_CA`, or `admin.tls.cert`): HTTP/1.1 over Ferry's own TLS client (OpenSSL), the certificate
 * verified against that file and for the URL's host (a name, or an IP address against the certificate's
 * iPAddress subjectAltNames). OpenSSL takes a self-signed certificate named as the trust anchor as the
 * server's certificate even when it says CA:TRUE, as `openssl req -x509` makes them; Deno's fetch (rustls)
 * refuses such a certificate as an end entity ("CaUsedAsEndEntity").
 */

import { isIp } from "./core/ip.ts";
import { type ByteStream, writeAll } from "./core/stream.ts";
import { TlsClientContext, tlsConnect } from "./tls/client.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A `fetch`-like function for the admin client, and `close()` to free its TLS context. */
export interface HttpsTransport {
  fetch(request: Request): Promise<Response>;
  close(): void;
}

/** Splits a `Transfer-Encoding: chunked` body into its data. */
function dechunk(body: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  let i = 0;
  for (;;) {
    let eol = i;
    while (eol + 1 < body.length && !(body[eol] === 13 && body[eol + 1] === 10)) eol++;
    if (eol + 1 >= body.length) throw new Error("truncated chunked body");
    const size = parseInt(dec.decode(body.subarray(i, eol)).split(";")[0].trim(), 16);
    if (!Number.isFinite(size) || size < 0) throw new Error("bad chunk size");
    i = eol + 2;
    if (size === 0) break;
    if (i + size > body.length) throw new Error("truncated chunk");
    parts.push(body.subarray(i, i + size));
    i += size + 2;
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Parses a whole HTTP/1.1 response (read to the end of the connection). */
function parseResponse(raw: Uint8Array): Response {
  let head = -1;
  for (let i = 0; i + 3 < raw.length; i++) {
    if (raw[i] === 13 && raw[i + 1] === 10 && raw[i + 2] === 13 && raw[i + 3] === 10) {
      head = i;
      break;
    }
  }
  if (head < 0) throw new Error("no complete HTTP answer");
  const lines = dec.decode(raw.subarray(0, head)).split("\r\n");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0])?.[1]);
  if (!status) throw new Error(`not an HTTP answer: ${JSON.stringify(lines[0].slice(0, 80))}`);
  const headers = new Headers();
  for (const l of lines.slice(1)) {
    const c = l.indexOf(":");
    if (c > 0) headers.append(l.slice(0, c).trim(), l.slice(c + 1).trim());
  }
  let body = raw.subarray(head + 4);
  if ((headers.get("transfer-encoding") ?? "").toLowerCase().includes("chunked")) {
    body = dechunk(body);
    headers.delete("transfer-encoding");
  } else if (headers.has("content-length")) {
    const length = Number(headers.get("content-length"));
    if (!Number.isInteger(length) || length > body.length) throw new Error("truncated HTTP answer");
    body = body.subarray(0, length);
  }
  const empty = status === 204 || status === 205 || status === 304;
  return new Response(empty ? null : body.slice(), { status, headers });
}

/** An HTTPS transport trusting the certificates in `caFile`. */
export function httpsTransport(caFile: string): HttpsTransport {
  let context: TlsClientContext | undefined;
  async function fetch(request: Request): Promise<Response> {
    context ??= new TlsClientContext({ caFile });
    const url = new URL(request.url);
    const host = url.hostname.replace(/^\[|\]$/g, "");
    const signal = request.signal;
    const body = request.body ? new Uint8Array(await request.arrayBuffer()) : undefined;
    let stream: ByteStream | undefined;
    const abort = () => {
      try {
        stream?.close();
      } catch { /* already closed */ }
    };
    signal.addEventListener("abort", abort, { once: true });
    try {
      const conn = await Deno.connect({ hostname: host, port: url.port ? Number(url.port) : 443 });
      stream = conn;
      if (signal.aborted) throw signal.reason;
      const tls = await tlsConnect(conn, {
        context,
        serverName: isIp(host) ? undefined : host,
        names: [host],
        verify: "require",
      });
      stream = tls;
      const fields = [...request.headers].map(([k, v]) => `${k}: ${v}\r\n`).join("");
      const length = body ? `Content-Length: ${body.length}\r\n` : "";
      await writeAll(
        tls,
        enc.encode(
          `${request.method} ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n${fields}${length}` +
            "Connection: close\r\n\r\n",
        ),
      );
      if (body) await writeAll(tls, body);
      const chunks: Uint8Array[] = [];
      let total = 0;
      const buf = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await tls.read(buf);
        if (n === null) break;
        chunks.push(buf.slice(0, n));
        total += n;
      }
      const raw = new Uint8Array(total);
      let off = 0;
      for (const c of chunks) {
        raw.set(c, off);
        off += c.length;
      }
      return parseResponse(raw);
    } catch (err) {
      // A TlsError's message carries OpenSSL's verdict (e.g. "certificate verify failed").
      throw signal.aborted ? signal.reason : err;
    } finally {
      signal.removeEventListener("abort", abort);
      try {
        stream?.close();
      } catch { /* already closed (a failed handshake closes its connection) */ }
    }
  }
  return { fetch, close: () => context?.close() };
}
