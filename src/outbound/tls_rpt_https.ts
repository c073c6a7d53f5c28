/**
 * TLS-RPT delivery over HTTPS (RFC 8460 §5.3.2): `POST` of the gzip'd report with
 * `Content-Type: application/tlsrpt+gzip` over HTTP/1.1 on Ferry's own TLS client; the address from Ferry's
 * resolver, the certificate PKIX-verified for the URL's host, one deadline for the whole exchange; any 2xx
 * status is success, anything else (a redirect too) a failure to try again later.
 */

import { writeAll } from "../core/stream.ts";
import type { Resolver } from "../dns/resolver.ts";
import type { TlsClientContext } from "../tls/client.ts";
import { closeHeld, httpsConnect, type HttpsHeld } from "./https_connect.ts";

/** Options for `postReport`. */
export interface PostReportOptions {
  resolver: Resolver;
  /** Trust store for the report host (PKIX) */
  tlsContext: TlsClientContext;
  /** Deadline for the whole POST in ms */
  timeoutMs: number;
  userAgent?: string;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** POSTs `body` to `url`; resolves to the HTTP status line, throws when the POST did not get a 2xx answer. */
export async function postReport(url: URL, body: Uint8Array, opts: PostReportOptions): Promise<string> {
  const host = url.hostname.replace(/^\[|\]$/g, "");
  const port = url.port ? Number(url.port) : 443;
  const signal = AbortSignal.timeout(opts.timeoutMs);
  const held: HttpsHeld = {};
  const deadline = new Promise<never>((_, reject) =>
    signal.addEventListener("abort", () => reject(new Error(`POST to ${url.origin} timed out`)))
  );
  const work = exchange();
  async function exchange(): Promise<string> {
    const stream = await httpsConnect({ ...opts, host, port, signal }, held);
    const path = `${url.pathname || "/"}${url.search}`;
    const head =
      `POST ${path} HTTP/1.1\r\nHost: ${url.host}\r\nUser-Agent: ${opts.userAgent ?? "Ferry"}\r\n` +
      `Content-Type: application/tlsrpt+gzip\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
    await writeAll(stream, enc.encode(head));
    await writeAll(stream, body);
    // Only the status line matters; read until it is complete (or the peer closes).
    const buf = new Uint8Array(8192);
    let len = 0;
    while (len < buf.length) {
      const n = await stream.read(buf.subarray(len));
      if (n === null) break;
      len += n;
      if (dec.decode(buf.subarray(0, len)).includes("\r\n")) break;
    }
    const line = dec.decode(buf.subarray(0, len)).split("\r\n")[0];
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(line)?.[1];
    if (!status) throw new Error(`no HTTP answer from ${url.origin}`);
    if (!status.startsWith("2")) throw new Error(`${url.origin} answered "${line}"`);
    return line;
  }
  try {
    return await Promise.race([work, deadline]);
  } finally {
    closeHeld(held);
    work.catch(() => {});
  }
}
