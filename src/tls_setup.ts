/** Builds the server-side TLS acceptor from the config (certificate sets, SNI, OCSP stapling). */

import type { ResolvedConfig } from "./config/schema.ts";
import type { Logger } from "./core/log.ts";
import type { TlsAcceptor } from "./inbound/connection.ts";

/** Creates the acceptor; throws ConfigError naming the file for unusable certificates or keys. */
export function buildTlsAcceptor(_config: ResolvedConfig, _log: Logger): Promise<TlsAcceptor> {
  throw new Error("TLS is not wired yet");
}
