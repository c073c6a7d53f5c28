/**
 * Fetches an OCSP response over HTTP POST (RFC 6960 appendix A.1, RFC 5019 5).
 * Trusts nothing it receives: the bytes are bounded in size and returned for `checkOcspResponse` to judge.
 */

import { concatBytes } from "../core/bytes.ts";

/** Options for one OCSP fetch. */
export interface OcspFetchOptions {
  /** Deadline for the whole exchange, body included */
  timeoutMs: number;
  /** Aborts the fetch early (e.g. on shutdown) */
  signal?: AbortSignal;
  /** Largest response accepted, in bytes; 64 KiB by default */
  maxBytes?: number;
}

/**
 * POSTs a DER OCSPRequest to `url` and returns the DER response body. Throws on a network error, a
 * timeout, a non-2xx status, a content type that is plainly not OCSP (text or HTML; a missing or generic
 * type is accepted), an empty body or one larger than `maxBytes`.
 */
export async function fetchOcspResponse(
  url: string,
  requestDer: Uint8Array,
  opts: OcspFetchOptions,
): Promise<Uint8Array> {
  const maxBytes = opts.maxBytes ?? 64 * 1024;
  const timeout = AbortSignal.timeout(opts.timeoutMs);
  const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
  let res: Response;
  try {
    res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/ocsp-request", accept: "application/ocsp-response" },
      body: requestDer as Uint8Array<ArrayBuffer>,
      redirect: "error",
      signal,
    });
  } catch (e) {
    throw new Error(
      `OCSP request to "${url}" failed: ${timeout.aborted ? "timed out" : (e as Error).message}`,
    );
  }
  try {
    if (!res.ok) throw new Error(`OCSP responder "${url}" answered HTTP ${res.status}`);
    const type = (res.headers.get("content-type") ?? "").toLowerCase();
    if (type.startsWith("text/")) {
      throw new Error(`OCSP responder "${url}" sent "${type}", not an OCSP response`);
    }
    const declared = Number(res.headers.get("content-length") ?? "0");
    if (declared > maxBytes) throw new Error(`OCSP response from "${url}" is larger than ${maxBytes} bytes`);
    const body = await readBounded(res, maxBytes, url);
    if (body.byteLength === 0) throw new Error(`OCSP responder "${url}" sent an empty body`);
    return body;
  } catch (e) {
    await res.body?.cancel().catch(() => {});
    if (timeout.aborted) throw new Error(`OCSP request to "${url}" timed out`);
    throw e;
  }
}

async function readBounded(res: Response, maxBytes: number, url: string): Promise<Uint8Array> {
  if (!res.body) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of res.body) {
    total += chunk.byteLength;
    if (total > maxBytes) throw new Error(`OCSP response from "${url}" is larger than ${maxBytes} bytes`);
    chunks.push(chunk);
  }
  return concatBytes(chunks);
}
