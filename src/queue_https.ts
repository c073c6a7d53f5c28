/**
 * The queue command's transport to an admin listener on HTTPS when a CA file is named (`--ca`,
 * `FERRY_ADMIN_CA`, or `admin.tls.cert`): HTTP/1.1 over Ferry's own TLS client (OpenSSL), the certificate
 * verified against that file and for the URL's host (a name, or an IP address against the certificate's
 * iPAddress subjectAltNames). OpenSSL takes a self-signed certificate named as the trust anchor as the
 * server's certificate even when it says CA:TRUE, as `openssl req -x509` makes them; Deno's fetch (rustls)
 * refuses such a certificate as an end entity ("CaUsedAsEndEntity").
 */

import { concatBytes } from "./core/bytes.ts";
import { responseBody, splitResponse } from "./core/http1.ts";
import { isIp } from "./core/ip.ts";
import { type ByteStream, writeAll } from "./core/stream.ts";
import { TlsClientContext, tlsConnect } from "./tls/client.ts";

const enc = new TextEncoder();

/** A `fetch`-like function for the admin client, and `close()` to free its TLS context. */
export interface HttpsTransport {
  fetch(request: Request): Promise<Response>;
  close(): void;
}

/** `raw`, a whole HTTP/1.1 response, as a Response. */
function toResponse(raw: Uint8Array): Response {
  const res = splitResponse(raw);
  if (res === undefined) throw new Error("no complete HTTP answer");
  if (res.status === undefined) {
    throw new Error(`not an HTTP answer: ${JSON.stringify(res.statusLine.slice(0, 80))}`);
  }
  const body = responseBody(res);
  const headers = new Headers();
  for (const [name, value] of res.headers) if (name !== "transfer-encoding") headers.set(name, value);
  const empty = res.status === 204 || res.status === 205 || res.status === 304;
  return new Response(empty ? null : body.slice(), { status: res.status, headers });
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
      const buf = new Uint8Array(64 * 1024);
      for (;;) {
        const n = await tls.read(buf);
        if (n === null) break;
        chunks.push(buf.slice(0, n));
      }
      return toResponse(concatBytes(chunks));
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
