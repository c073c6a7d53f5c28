/**
 * MTA-STS policy retrieval (RFC 8461 §3.3): `GET https://mta-sts.<domain>/.well-known/mta-sts.txt` over
 * HTTP/1.1 on Ferry's own TLS client, the address from Ferry's resolver, the certificate PKIX-verified for
 * `mta-sts.<domain>`; no redirects, status 200 only, `text/plain` only, at most 64 KiB, one deadline for the
 * whole fetch. Trusts the configured CA file (or the system store) and nothing the server says about itself.
 */

import { type Http1FramingError, responseBody, splitResponse } from "../../core/http1.ts";
import { writeAll } from "../../core/stream.ts";
import type { Resolver } from "../../dns/resolver.ts";
import type { TlsClientContext } from "../../tls/client.ts";
import {
  closeHeld,
  httpsConnect,
  type HttpsConnectError,
  type HttpsHeld,
  type HttpsStream,
} from "../https_connect.ts";

/** The largest policy body accepted (RFC 8461 §3.3: 64 KB). */
export const MAX_POLICY_BYTES = 64 * 1024;

/** Why a fetch failed; `kind` maps to the TLS-RPT result types. */
export class StsFetchError extends Error {
  readonly kind: "sts-policy-fetch-error" | "sts-webpki-invalid" | "sts-policy-invalid";
  constructor(kind: StsFetchError["kind"], message: string) {
    super(message);
    this.name = "StsFetchError";
    this.kind = kind;
  }
}

/** Options for `fetchStsPolicy`. */
export interface StsFetchOptions {
  resolver: Resolver;
  /** Trust store for the policy host (PKIX) */
  tlsContext: TlsClientContext;
  /** HTTPS port (443; other values for tests) */
  port: number;
  /** Deadline for the whole fetch in ms */
  timeoutMs: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Fetches the policy text of `domain`; throws StsFetchError. */
export async function fetchStsPolicy(domain: string, opts: StsFetchOptions): Promise<string> {
  const host = `mta-sts.${domain}`;
  const signal = AbortSignal.timeout(opts.timeoutMs);
  const deadline = new Promise<never>((_, reject) =>
    signal.addEventListener(
      "abort",
      () => reject(new StsFetchError("sts-policy-fetch-error", `fetching from ${host} timed out`)),
    )
  );
  const held: HttpsHeld = {};
  const work = (async () => {
    let stream: HttpsStream;
    try {
      stream = await httpsConnect({ ...opts, host, signal }, held);
    } catch (err) {
      const e = err as HttpsConnectError;
      throw new StsFetchError(
        e.step === "certificate" ? "sts-webpki-invalid" : "sts-policy-fetch-error",
        e.message,
      );
    }
    const portPart = opts.port === 443 ? "" : `:${opts.port}`;
    await writeAll(
      stream,
      enc.encode(
        `GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: ${host}${portPart}\r\nUser-Agent: Ferry\r\n` +
          "Accept: text/plain\r\nConnection: close\r\n\r\n",
      ),
    );
    // Read the whole response (Connection: close), never more than headers + 64 KiB + framing.
    const limit = MAX_POLICY_BYTES + 16 * 1024;
    const buf = new Uint8Array(limit + 1);
    let len = 0;
    for (;;) {
      const n = await stream.read(buf.subarray(len));
      if (n === null) break;
      len += n;
      if (len > limit) {
        throw new StsFetchError("sts-policy-invalid", `policy from ${host} is larger than 64 KiB`);
      }
    }
    const res = splitResponse(buf.subarray(0, len));
    if (res === undefined) {
      throw new StsFetchError("sts-policy-fetch-error", `malformed HTTP response from ${host}`);
    }
    // RFC 8461 §3.3: "HTTP 3xx redirects MUST NOT be followed"; anything but 200 is a failed fetch.
    if (res.status !== 200) {
      throw new StsFetchError("sts-policy-fetch-error", `HTTP status ${res.status ?? "?"} from ${host}`);
    }
    const type = (res.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
    if (type !== "text/plain") {
      throw new StsFetchError("sts-policy-invalid", `content type "${type}" from ${host}, not text/plain`);
    }
    let body: Uint8Array;
    try {
      body = responseBody(res);
    } catch (err) {
      const e = err as Http1FramingError;
      throw e.framing === "chunked"
        ? new StsFetchError("sts-policy-invalid", `bad response body from ${host}: ${e.message}`)
        : new StsFetchError("sts-policy-fetch-error", `truncated response from ${host}`);
    }
    if (body.length > MAX_POLICY_BYTES) {
      throw new StsFetchError("sts-policy-invalid", `policy from ${host} is larger than 64 KiB`);
    }
    return dec.decode(body);
  })();
  try {
    return await Promise.race([work, deadline]);
  } finally {
    closeHeld(held);
    work.catch(() => {});
  }
}
