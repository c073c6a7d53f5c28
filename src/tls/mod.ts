/** The TLS room's public API: OpenSSL 3 through FFI (see the modules for RFCs and trust). */

export { loadOpenSsl, setOpenSslPaths } from "./_ffi.ts";
export { TlsConfigError, TlsError } from "./errors.ts";
export type { TlsProtocolOptions, TlsVersion } from "./_protocol_options.ts";
export {
  tlsAccept,
  type TlsAcceptOptions,
  type TlsCertificateSet,
  type TlsClientCertificateOptions,
  TlsServerContext,
  type TlsServerOptions,
} from "./server_context.ts";
export {
  DEFAULT_HANDSHAKE_TIMEOUT,
  type HandshakeOptions,
  TlsStream,
  type TlsVerification,
} from "./tls_stream.ts";
export {
  type TlsaRecord,
  TlsClientContext,
  type TlsClientOptions,
  tlsConnect,
  type TlsConnectOptions,
} from "./client.ts";
export { canonicalHostname, checkHostname, matchesPresented, type PresentedNames } from "./hostname.ts";
