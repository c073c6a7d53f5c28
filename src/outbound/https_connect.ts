/**
 * The connection under Ferry's own HTTPS requests (MTA-STS policy fetches, TLS-RPT report POSTs): the host's
 * address from Ferry's resolver (A and AAAA; the first address is used), TCP, then TLS with the certificate
 * PKIX-verified for the host name. The caller owns the deadline: what was opened is kept in `held`, so that
 * `closeHeld` can close it whether the request finished, failed or ran out of time.
 */

import type { Resolver } from "../dns/resolver.ts";
import { type TlsClientContext, tlsConnect } from "../tls/client.ts";
import { isIp } from "../core/ip.ts";

/** A TLS stream opened by {@link httpsConnect}. */
export type HttpsStream = Awaited<ReturnType<typeof tlsConnect>>;

/** What a request opened so far. */
export interface HttpsHeld {
  conn?: Deno.TcpConn;
  stream?: HttpsStream;
}

/** Where and how to connect. */
export interface HttpsTarget {
  /** Host name, or an IP literal (then no name lookup and no SNI) */
  host: string;
  port: number;
  resolver: Resolver;
  /** Trust store (PKIX) */
  tlsContext: TlsClientContext;
  /** The request's deadline */
  signal: AbortSignal;
  timeoutMs: number;
}

/** Which step failed: the address lookup, the TCP connection or the certificate (TLS handshake). */
export class HttpsConnectError extends Error {
  constructor(readonly step: "address" | "connect" | "certificate", message: string) {
    super(message);
    this.name = "HttpsConnectError";
  }
}

/** Opens a verified TLS stream to the target; throws {@link HttpsConnectError}. */
export async function httpsConnect(t: HttpsTarget, held: HttpsHeld): Promise<HttpsStream> {
  let ips: string[];
  if (isIp(t.host)) ips = [t.host];
  else {
    const failures: string[] = [];
    const lookup = (q: Promise<{ records: string[] }>) =>
      q.catch((err) => {
        failures.push((err as Error).message);
        return { records: [] as string[] };
      });
    const [a, aaaa] = await Promise.all([
      lookup(t.resolver.a(t.host, { signal: t.signal })),
      lookup(t.resolver.aaaa(t.host, { signal: t.signal })),
    ]);
    ips = [...a.records, ...aaaa.records];
    if (ips.length === 0) {
      throw new HttpsConnectError(
        "address",
        `no address for ${t.host}${failures.length ? `: ${failures[0]}` : ""}`,
      );
    }
  }
  try {
    held.conn = await Deno.connect({ hostname: ips[0], port: t.port });
  } catch (err) {
    throw new HttpsConnectError("connect", `cannot connect to ${t.host}: ${(err as Error).message}`);
  }
  // The deadline may have passed while connecting, after the caller's closeHeld() ran: close here.
  if (t.signal.aborted) {
    closeHeld(held);
    throw new HttpsConnectError("connect", `connecting to ${t.host} timed out`);
  }
  try {
    held.stream = await tlsConnect(held.conn, {
      context: t.tlsContext,
      serverName: isIp(t.host) ? undefined : t.host,
      names: [t.host],
      verify: "require",
      timeout: t.timeoutMs,
    });
  } catch (err) {
    const why = (err as { reason?: string }).reason ?? (err as Error).message;
    throw new HttpsConnectError("certificate", `certificate of ${t.host} not valid: ${why}`);
  }
  return held.stream;
}

/** Closes what a request opened (the TLS stream, or the bare connection before TLS). */
export function closeHeld(held: HttpsHeld): void {
  if (held.stream) held.stream.close();
  else {
    try {
      held.conn?.close();
    } catch { /* closed */ }
  }
}
