/**
 * The server side of TLS (RFC 8446, RFC 5246): certificate sets chosen by SNI (RFC 6066 §3), OCSP stapling
 * (RFC 6066 §8) from a per-set provider, optional client certificates, and `tlsAccept`, which starts TLS
 * on an already-connected stream (STARTTLS, RFC 3207). Trusts its configured files; nothing from clients.
 */

import type { ByteStream } from "../core/stream.ts";
import {
  NativeContext,
  NativeSsl,
  SSL_SESS_CACHE_SERVER,
  SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
  SSL_VERIFY_PEER,
  takeErrors,
} from "./_ffi.ts";
import {
  applyProtocolOptions,
  assertReadable,
  loadKeyPair,
  type TlsProtocolOptions,
} from "./_protocol_options.ts";
import { TlsConfigError, TlsError } from "./errors.ts";
import { DEFAULT_HANDSHAKE_TIMEOUT, type HandshakeOptions, TlsStream } from "./tls_stream.ts";
import { errorMessage } from "../core/error_message.ts";

/** One certificate with its key, the names it serves and its OCSP response provider. */
export interface TlsCertificateSet {
  /** PEM: the certificate followed by its chain */
  certFile: string;
  /** PEM private key */
  keyFile: string;
  /**
   * SNI names this set answers for ("mx.example.com", "*.example.com"); sets without names are the
   * default. Sets with the same names (say RSA and ECDSA) share one context and OpenSSL picks by what
   * the client supports.
   */
  serverNames?: string[];
  /** Called on each handshake whose client asked for stapling; the DER OCSP response to staple, if any */
  ocsp?: () => Uint8Array | undefined;
}

/** Client certificate handling. */
export interface TlsClientCertificateOptions {
  /** PEM file of the CAs client certificates must chain to (also named in the CertificateRequest) */
  caFile: string;
  /** Fail the handshake without a valid client certificate (default: request, verify and only record) */
  require?: boolean;
}

/** Everything a server context is built from. */
export interface TlsServerOptions extends TlsProtocolOptions {
  /** At least one certificate set; the first set without `serverNames` (else the first) is the default */
  certificates: TlsCertificateSet[];
  /** Ask clients for certificates */
  clientCertificates?: TlsClientCertificateOptions;
  /** Default handshake deadline in ms (30 s) */
  handshakeTimeout?: number;
}

interface Group {
  names: string[];
  ctx: NativeContext;
  /** certificate id → set, to find the set OpenSSL chose when stapling */
  sets: Map<bigint, TlsCertificateSet>;
}

/**
 * Most TLS ≤ 1.2 sessions kept for resumption by session id. OpenSSL's default (20480) lets clients
 * without session tickets pin tens of MB (each cached session holds its peer certificate); resumption
 * saves SMTP little, so a small cache is enough. TLS 1.3 and ticket-using clients are not cached here.
 */
const SESSION_CACHE_SIZE = 1024;

function normName(n: string): string {
  return n.toLowerCase().replace(/\.$/, "");
}

/** Server TLS configuration, built once per certificate configuration and reused for every connection. */
export class TlsServerContext {
  #groups: Group[] = [];
  #default: Group;
  #timeout: number;

  /** Loads every set; throws TlsConfigError naming the file at fault. */
  constructor(opts: TlsServerOptions) {
    if (!opts.certificates?.length) throw new TlsConfigError("A TLS server needs at least one certificate");
    this.#timeout = opts.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT;
    try {
      for (const set of opts.certificates) {
        const names = (set.serverNames ?? []).map(normName).sort();
        const key = names.join(" ");
        let g = this.#groups.find((x) => x.names.join(" ") === key);
        if (!g) {
          g = { names, ctx: this.#newContext(opts), sets: new Map() };
          this.#groups.push(g);
        }
        loadKeyPair(g.ctx, set.certFile, set.keyFile);
        g.sets.set(g.ctx.currentCertificateId(), set);
      }
    } catch (e) {
      this.close();
      throw e;
    }
    this.#default = this.#groups.find((g) => g.names.length === 0) ?? this.#groups[0];
    for (const g of this.#groups) {
      g.ctx.onServerName((name) => this.#select(name).ctx);
      g.ctx.onStatusRequest((certId) => {
        const set = g.sets.get(certId) ?? [...g.sets.values()][0];
        return set?.ocsp?.();
      });
    }
  }

  #newContext(opts: TlsServerOptions): NativeContext {
    const ctx = new NativeContext();
    try {
      applyProtocolOptions(ctx, opts);
      ctx.setSessionIdContext("ferry-smtp");
      ctx.setSessionCache(SSL_SESS_CACHE_SERVER, SESSION_CACHE_SIZE);
      const cc = opts.clientCertificates;
      if (cc) {
        assertReadable(cc.caFile, "client CA");
        if (!ctx.loadVerifyLocations(cc.caFile) || !ctx.setClientCaListFromFile(cc.caFile)) {
          throw new TlsConfigError(`Cannot load client CA file "${cc.caFile}": ${takeErrors()}`, {
            file: cc.caFile,
          });
        }
        if (cc.require) ctx.setVerify(SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, false);
        else ctx.setVerify(SSL_VERIFY_PEER, true);
      }
    } catch (e) {
      ctx.free();
      throw e;
    }
    return ctx;
  }

  #select(name: string | undefined): Group {
    if (name === undefined) return this.#default;
    const n = normName(name);
    const exact = this.#groups.find((g) => g.names.includes(n));
    if (exact) return exact;
    const parent = n.slice(n.indexOf(".") + 1);
    const wild = n.includes(".") && this.#groups.find((g) => g.names.includes(`*.${parent}`));
    return wild || this.#default;
  }

  /** Default handshake deadline of this context in ms. */
  get handshakeTimeout(): number {
    return this.#timeout;
  }

  /** Internal (tlsAccept): a fresh server session on the default context. */
  newSession(): NativeSsl {
    return new NativeSsl(this.#default.ctx, true);
  }

  /** Frees the OpenSSL contexts (sessions in progress keep theirs alive). Safe to call twice. */
  close(): void {
    for (const g of this.#groups) g.ctx.free();
    this.#groups = [];
  }
}

/** Options for one server handshake. */
export interface TlsAcceptOptions extends HandshakeOptions {
  /** Bytes already read from the connection that belong to the handshake (normally none) */
  initial?: Uint8Array;
}

/**
 * Runs the server handshake on `conn` (fresh or after STARTTLS). On failure only this connection is
 * closed and a TlsError carrying OpenSSL's reason is thrown.
 */
export async function tlsAccept(
  conn: ByteStream,
  ctx: TlsServerContext,
  opts: TlsAcceptOptions = {},
): Promise<TlsStream> {
  let ssl: NativeSsl;
  try {
    ssl = ctx.newSession();
  } catch (e) {
    conn.close();
    throw new TlsError("Cannot start a TLS session", { reason: errorMessage(e) });
  }
  const stream = new TlsStream(conn, ssl, true);
  await stream.handshake({ timeout: ctx.handshakeTimeout, ...opts });
  return stream;
}
