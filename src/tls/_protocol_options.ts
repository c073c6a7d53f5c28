/**
 * Protocol settings shared by server and client contexts: version range (RFC 8446 / RFC 5246), TLS ≤ 1.2
 * cipher list, TLS 1.3 ciphersuites and key exchange groups, applied to one OpenSSL context.
 */

import { type NativeContext, takeErrors, TLS1_2_VERSION, TLS1_3_VERSION } from "./_ffi.ts";
import { TlsConfigError } from "./errors.ts";
import { errorMessage } from "../core/error_message.ts";

/** A TLS protocol version Ferry speaks. */
export type TlsVersion = "TLS1.2" | "TLS1.3";

/** Protocol settings of a context. */
export interface TlsProtocolOptions {
  /** Lowest version accepted (default "TLS1.2") */
  minVersion?: TlsVersion;
  /** Highest version offered (default "TLS1.3") */
  maxVersion?: TlsVersion;
  /** OpenSSL cipher string for TLS ≤ 1.2 */
  ciphers?: string;
  /** TLS 1.3 ciphersuites, colon separated */
  ciphersuites?: string;
  /** Key exchange groups, colon separated ("X25519:P-256") */
  groups?: string;
}

const versions: Record<TlsVersion, number> = { "TLS1.2": TLS1_2_VERSION, "TLS1.3": TLS1_3_VERSION };

/** Applies `opts` to `ctx`; throws TlsConfigError naming the setting OpenSSL refused. */
export function applyProtocolOptions(ctx: NativeContext, opts: TlsProtocolOptions): void {
  const min = versions[opts.minVersion ?? "TLS1.2"], max = versions[opts.maxVersion ?? "TLS1.3"];
  if (min === undefined || max === undefined || min > max) {
    throw new TlsConfigError(`Invalid TLS version range "${opts.minVersion}"–"${opts.maxVersion}"`, {
      setting: "protocols",
    });
  }
  if (!ctx.setProtocolVersions(min, max)) {
    throw new TlsConfigError(`OpenSSL refused the TLS version range: ${takeErrors()}`, {
      setting: "protocols",
    });
  }
  if (opts.ciphers !== undefined && !ctx.setCipherList(opts.ciphers)) {
    throw new TlsConfigError(`OpenSSL refused the cipher list "${opts.ciphers}": ${takeErrors()}`, {
      setting: "ciphers",
    });
  }
  if (opts.ciphersuites !== undefined && !ctx.setCiphersuites(opts.ciphersuites)) {
    throw new TlsConfigError(
      `OpenSSL refused the TLS 1.3 ciphersuites "${opts.ciphersuites}": ${takeErrors()}`,
      { setting: "ciphersuites" },
    );
  }
  if (opts.groups !== undefined && !ctx.setGroups(opts.groups)) {
    throw new TlsConfigError(`OpenSSL refused the groups "${opts.groups}": ${takeErrors()}`, {
      setting: "groups",
    });
  }
}

/** Checks that `file` can be read, so the error names it before OpenSSL's less helpful one. */
export function assertReadable(file: string, what: string): void {
  try {
    Deno.readFileSync(file);
  } catch (e) {
    throw new TlsConfigError(
      `Cannot read ${what} file "${file}": ${errorMessage(e)}`,
      { file, cause: e },
    );
  }
}

/** Loads a certificate chain and its key into `ctx`, naming the file at fault on any failure. */
export function loadKeyPair(ctx: NativeContext, certFile: string, keyFile: string): void {
  assertReadable(certFile, "certificate");
  assertReadable(keyFile, "key");
  if (!ctx.useCertificateChainFile(certFile)) {
    throw new TlsConfigError(`Cannot load certificate file "${certFile}": ${takeErrors()}`, {
      file: certFile,
    });
  }
  const loaded = ctx.usePrivateKeyFile(keyFile) && ctx.checkPrivateKey();
  if (!loaded) {
    const reason = takeErrors();
    const message = /mismatch/.test(reason)
      ? `Key file "${keyFile}" does not match certificate file "${certFile}": ${reason}`
      : `Cannot load key file "${keyFile}": ${reason}`;
    throw new TlsConfigError(message, { file: keyFile });
  }
}
