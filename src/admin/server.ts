/**
 * The admin listener: `Deno.serve` on `admin.listen` (port 0 picks a free port), HTTPS with `admin.tls`.
 * SECURITY: the config refuses a non-loopback address without tokens and a certificate; without configured
 * tokens a random one is kept in the spool directory (mode 0600) and its path logged.
 */

import type { Hono } from "hono";
import type { AdminAddress } from "../core/listen_address.ts";

/** A running admin listener. */
export interface AdminServer {
  hostname: string;
  port: number;
  /** `http://…` or `https://…` with the bound port */
  url: string;
  stop(): Promise<void>;
}

/** Binds and serves `app`; throws AddrInUse and friends as Deno does (the caller names the option). */
export function serveAdmin(
  app: Hono,
  address: AdminAddress,
  tls?: { cert: string; key: string },
): AdminServer {
  const server = Deno.serve({
    hostname: address.hostname,
    port: address.port,
    ...(tls ? { cert: tls.cert, key: tls.key } : {}),
    onListen() {},
  }, app.fetch);
  const addr = server.addr as Deno.NetAddr;
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return {
    hostname: addr.hostname,
    port: addr.port,
    url: `${tls ? "https" : "http"}://${host}:${addr.port}`,
    async stop() {
      await server.shutdown();
    },
  };
}
