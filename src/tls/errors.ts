/**
 * Errors of the TLS room: `TlsError` for a failed handshake or record-layer failure on one connection,
 * `TlsConfigError` for a certificate/key/CA configuration OpenSSL cannot load (the config layer turns it
 * into exit 78). Messages carry OpenSSL's own reason strings.
 */

/** A TLS handshake or I/O failure on one connection; only that connection is closed. */
export class TlsError extends Error {
  /** OpenSSL's reason string(s), when OpenSSL gave any */
  readonly reason?: string;

  /** Creates a TLS error; `reason` is OpenSSL's error queue text. */
  constructor(message: string, options?: { reason?: string; cause?: unknown }) {
    super(options?.reason ? `${message}: ${options.reason}` : message, { cause: options?.cause });
    this.name = "TlsError";
    this.reason = options?.reason;
  }
}

/** A TLS configuration OpenSSL refused; `file` names the offending file when there is one. */
export class TlsConfigError extends Error {
  /** The certificate, key or CA file at fault */
  readonly file?: string;
  /** The protocol setting at fault (`ciphers`, `ciphersuites`, `groups`, `protocols`), when it is not a file */
  readonly setting?: string;

  /** Creates a configuration error naming `file` or `setting`. */
  constructor(message: string, options?: { file?: string; setting?: string; cause?: unknown }) {
    super(message, { cause: options?.cause });
    this.name = "TlsConfigError";
    this.file = options?.file;
    this.setting = options?.setting;
  }
}
