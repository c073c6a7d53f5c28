/**
 * Builds the server-side TLS acceptor from the config: one TlsServerContext (certificate sets chosen by SNI)
 * and an OCSP stapler per set that asks for one. Unusable files become ConfigErrors naming the file.
 */

import { ConfigError } from "./config/load.ts";
import type { ResolvedConfig } from "./config/schema.ts";
import type { Logger } from "./core/log.ts";
import type { TlsAcceptor } from "./inbound/connection.ts";
import { loadOpenSsl, setOpenSslPaths } from "./tls/_ffi.ts";
import { TlsConfigError } from "./tls/errors.ts";
import type { OcspStapler } from "./tls/ocsp_stapler.ts";
import { tlsAccept, type TlsCertificateSet, TlsServerContext } from "./tls/server_context.ts";
import { errorMessage } from "./core/error_message.ts";

/** The acceptor and what must be stopped with it. */
export interface TlsSetup {
  accept: TlsAcceptor;
  /** Stops OCSP refreshing and frees the contexts */
  close(): void;
  /** Age in seconds of each certificate set's stapled OCSP response (only sets with `ocsp`; undefined: none) */
  stapleAges(): { set: number; seconds?: number }[];
}

/**
 * Points the TLS engine at `tls.library` and loads OpenSSL when anything needs it now (a configured library,
 * or server certificates); both TLS directions then use that library. Outbound TLS otherwise loads it lazily.
 */
export function openTlsLibrary(config: ResolvedConfig): void {
  const lib = config.tls.library;
  if (!lib && config.tls.certificates.length === 0) return;
  if (lib) setOpenSslPaths(lib);
  try {
    loadOpenSsl();
  } catch (err) {
    const what = lib
      ? `tls.library: cannot load "${lib.ssl}"/"${lib.crypto}"`
      : "tls: cannot load libssl.so.3";
    throw new ConfigError([`${what}: ${errorMessage(err)}`]);
  }
}

/** Creates the acceptor; throws ConfigError naming the file for unusable certificates or keys. */
export async function buildTlsAcceptor(config: ResolvedConfig, log: Logger): Promise<TlsSetup> {
  const t = config.tls;
  openTlsLibrary(config);
  const staplers: OcspStapler[] = [];
  const stapled: { set: number; stapler: OcspStapler }[] = [];
  const sets: TlsCertificateSet[] = [];
  try {
    for (const [i, c] of t.certificates.entries()) {
      let ocsp: (() => Uint8Array | undefined) | undefined;
      if (c.ocsp) {
        // Loaded only for a set with `ocsp`: pkijs costs start-up time a Ferry without stapling need not pay.
        const { OcspStapler } = await import("./tls/ocsp_stapler.ts");
        const stapler = new OcspStapler({
          certFile: c.cert,
          file: c.ocsp.file,
          fetch: c.ocsp.fetch,
          log: (line) => log.write(`OCSP ${c.cert}: ${line}`),
        });
        try {
          await stapler.start();
        } catch (err) {
          throw new ConfigError([`tls.certificates[${i}].ocsp: ${errorMessage(err)}`]);
        }
        staplers.push(stapler);
        stapled.push({ set: i, stapler });
        ocsp = () => stapler.current();
      }
      sets.push({ certFile: c.cert, keyFile: c.key, serverNames: c.serverNames, ocsp });
    }
    const sorted = [...t.protocols].sort();
    const ctx = new TlsServerContext({
      certificates: sets,
      minVersion: sorted[0],
      maxVersion: sorted[sorted.length - 1],
      ciphers: t.ciphers,
      ciphersuites: t.ciphersuites,
      groups: t.groups,
      // The config guarantees requestClientCert and clientCa come together.
      clientCertificates: t.clientCa ? { caFile: t.clientCa } : undefined,
      handshakeTimeout: t.handshakeTimeout,
    });
    return {
      accept: async (stream, opts) => {
        const tls = await tlsAccept(stream, ctx, { initial: opts?.initial });
        return { stream: tls, info: tls.info, certificates: tls.peerCertificates };
      },
      close() {
        for (const s of staplers) s.stop();
        ctx.close();
      },
      stapleAges: () => stapled.map((s) => ({ set: s.set, seconds: s.stapler.stapleAgeSeconds() })),
    };
  } catch (err) {
    for (const s of staplers) s.stop();
    if (err instanceof TlsConfigError) {
      const path = err.setting ? `tls.${err.setting}` : tlsFilePath(t, err.file);
      throw new ConfigError([`${path}: ${err.message}`]);
    }
    throw err;
  }
}

/** The config path of the TLS file at fault (`tls.certificates[1].key`, `tls.clientCa`), else `tls.certificates`. */
function tlsFilePath(t: ResolvedConfig["tls"], file: string | undefined): string {
  if (file !== undefined) {
    for (const [i, c] of t.certificates.entries()) {
      if (c.cert === file && c.key === file) return `tls.certificates[${i}]`;
      if (c.cert === file) return `tls.certificates[${i}].cert`;
      if (c.key === file) return `tls.certificates[${i}].key`;
    }
    if (t.clientCa === file) return "tls.clientCa";
  }
  return "tls.certificates";
}
