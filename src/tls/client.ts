/**
 * The client side of TLS (RFC 8446, RFC 5246) for outbound SMTP after STARTTLS (RFC 3207): SNI (RFC 6066),
 * PKIX chain verification (RFC 5280) by OpenSSL, RFC 6125 name check, DANE (RFC 6698, RFC 7672) by
 * OpenSSL's TLSA matching, OCSP stapling request and check (RFC 6066 §8, RFC 6960), and a per-certificate
 * veto hook (Exim's tls:cert event). Trusts its configured CAs and the TLSA records it is handed.
 */

import type { ByteStream } from "../core/stream.ts";
import {
  NativeContext,
  NativeSsl,
  SSL_SESS_CACHE_OFF,
  SSL_VERIFY_PEER,
  takeErrors,
  verifyErrorString,
  X509_V_OK,
} from "./_ffi.ts";
import {
  applyProtocolOptions,
  assertReadable,
  loadKeyPair,
  type TlsProtocolOptions,
} from "./_protocol_options.ts";
import { TlsConfigError, TlsError } from "./errors.ts";
import { checkHostname } from "./hostname.ts";
import {
  DEFAULT_HANDSHAKE_TIMEOUT,
  type HandshakeOptions,
  TlsStream,
  type TlsVerification,
} from "./tls_stream.ts";
import { errorMessage } from "../core/error_message.ts";

/** How a client context trusts servers and identifies itself. */
export interface TlsClientOptions extends TlsProtocolOptions {
  /** PEM file of trusted CAs; with neither this nor `caDir`, the system's default trust store */
  caFile?: string;
  /** Hashed directory of trusted CAs (c_rehash layout) */
  caDir?: string;
  /** A client certificate to present when asked */
  certificate?: { certFile: string; keyFile: string };
  /** Default handshake deadline in ms (30 s) */
  handshakeTimeout?: number;
}

/** Client TLS configuration, built once and reused for every outbound connection. */
export class TlsClientContext {
  #ctx: NativeContext;
  #timeout: number;

  /** Loads trust anchors and the optional client certificate; throws TlsConfigError naming a bad file. */
  constructor(opts: TlsClientOptions = {}) {
    this.#timeout = opts.handshakeTimeout ?? DEFAULT_HANDSHAKE_TIMEOUT;
    const ctx = new NativeContext();
    try {
      applyProtocolOptions(ctx, opts);
      if (opts.caFile !== undefined || opts.caDir !== undefined) {
        if (opts.caFile !== undefined) assertReadable(opts.caFile, "CA");
        if (!ctx.loadVerifyLocations(opts.caFile, opts.caDir)) {
          const file = opts.caFile ?? opts.caDir;
          throw new TlsConfigError(`Cannot load CA locations "${file}": ${takeErrors()}`, { file });
        }
      } else if (!ctx.setDefaultVerifyPaths()) {
        throw new TlsConfigError(`Cannot load the system trust store: ${takeErrors()}`);
      }
      if (opts.certificate) loadKeyPair(ctx, opts.certificate.certFile, opts.certificate.keyFile);
      if (!ctx.daneEnable()) throw new TlsConfigError(`Cannot enable DANE: ${takeErrors()}`);
      // Sessions are never resumed by tlsConnect, so none are kept (OpenSSL's client default already
      // caches none; this pins it).
      ctx.setSessionCache(SSL_SESS_CACHE_OFF);
      // Verify always, continue always: tlsConnect decides from the recorded result.
      ctx.setVerify(SSL_VERIFY_PEER, true);
    } catch (e) {
      ctx.free();
      throw e;
    }
    this.#ctx = ctx;
  }

  /** Default handshake deadline of this context in ms. */
  get handshakeTimeout(): number {
    return this.#timeout;
  }

  /** Internal (tlsConnect): a fresh client session. */
  newSession(): NativeSsl {
    return new NativeSsl(this.#ctx, false);
  }

  /** Frees the OpenSSL context. Safe to call twice. */
  close(): void {
    this.#ctx.free();
  }
}

/** One TLSA record (RFC 6698 §2.1). */
export interface TlsaRecord {
  /** 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE */
  usage: number;
  /** 0 full certificate, 1 SubjectPublicKeyInfo */
  selector: number;
  /** 0 exact, 1 SHA-256, 2 SHA-512 */
  mtype: number;
  data: Uint8Array;
}

/** Options for one client handshake. */
export interface TlsConnectOptions extends HandshakeOptions {
  /** Client context (default: one shared context trusting the system store) */
  context?: TlsClientContext;
  /** SNI to send */
  serverName?: string;
  /**
   * "require" (default): close and throw TlsError unless the server is verified, its name matches (when
   * checked) and OCSP passes (when required). "record": always complete and report in `verification`.
   */
  verify?: "require" | "record";
  /** Acceptable names for the RFC 6125 check; default `[serverName]`; `[]` skips the check */
  names?: string[];
  /** Ask the server to staple an OCSP response */
  requestOcsp?: boolean;
  /** hostsRequireOcsp: a stapled, good OCSP response is part of verification (implies requestOcsp) */
  requireOcsp?: boolean;
  /** Called once per received certificate (depth 0 = leaf); a non-empty string vetoes verification */
  onCert?: (depth: number, der: Uint8Array) => string | void;
  /**
   * DANE (RFC 7672): TLSA records for the server and the TLSA base domain (the MX host name). Names are
   * then checked by OpenSSL as RFC 7672 says (none for DANE-EE), not by the RFC 6125 check.
   */
  dane?: { tlsa: TlsaRecord[]; baseDomain: string; names?: string[] };
}

let defaultContext: TlsClientContext | undefined;

/**
 * Runs the client handshake over `conn` (fresh or after STARTTLS) and judges the server. The result's
 * `verification` says how; with `verify: "require"` a failure closes the connection and throws.
 */
export async function tlsConnect(conn: ByteStream, opts: TlsConnectOptions = {}): Promise<TlsStream> {
  let ssl: NativeSsl | undefined;
  let ctx: TlsClientContext;
  try {
    ctx = opts.context ?? (defaultContext ??= new TlsClientContext());
    ssl = ctx.newSession();
    if (opts.serverName && !ssl.setHostName(opts.serverName)) {
      throw new Error(`Cannot set SNI "${opts.serverName}": ${takeErrors()}`);
    }
    if (opts.requestOcsp || opts.requireOcsp) ssl.requestOcsp();
    if (opts.dane) {
      if (!ssl.daneEnable(opts.dane.baseDomain)) throw new Error(`Cannot enable DANE: ${takeErrors()}`);
      for (const n of opts.dane.names ?? []) {
        if (!ssl.addHost(n)) throw new Error(`Cannot add DANE name "${n}": ${takeErrors()}`);
      }
      for (const r of opts.dane.tlsa) {
        if (ssl.daneTlsaAdd(r.usage, r.selector, r.mtype, r.data.slice()) < 0) takeErrors(); // malformed: skip
      }
    }
  } catch (e) {
    ssl?.free();
    conn.close();
    throw new TlsError("Cannot start a TLS session", { reason: errorMessage(e) });
  }
  const stream = new TlsStream(conn, ssl, false);
  await stream.handshake({ timeout: ctx.handshakeTimeout, ...opts });

  let v: TlsVerification;
  try {
    v = await judge(stream, ssl, opts);
  } catch (e) {
    // An onCert hook or an OpenSSL call that fails must not leave the session (and its native SSL) open.
    stream.close();
    await stream.closed;
    throw e;
  }
  stream.setVerification(v);
  if ((opts.verify ?? "require") === "require") {
    const why = !v.verified
      ? v.verifyError
      : v.nameMatched === false
      ? "server name does not match"
      : undefined;
    if (why !== undefined) {
      stream.close();
      await stream.closed;
      throw new TlsError("Server certificate rejected", { reason: why });
    }
  }
  return stream;
}

async function judge(
  stream: TlsStream,
  ssl: NativeSsl,
  opts: TlsConnectOptions,
): Promise<TlsVerification> {
  const chain = stream.peerCertificates;
  const code = ssl.verifyResult();
  const daneDepth = opts.dane ? ssl.daneAuthorityDepth() : -1;
  const v: TlsVerification = {
    verified: chain.length > 0 && code === X509_V_OK,
    nameChecked: false,
    method: daneDepth >= 0 ? "dane" : "pkix",
  };
  if (daneDepth >= 0) {
    v.daneDepth = daneDepth;
    v.daneUsage = ssl.daneMatchedUsage();
  }
  if (chain.length === 0) v.verifyError = "no server certificate";
  else if (code !== X509_V_OK) v.verifyError = verifyErrorString(code);

  for (let depth = 0; depth < chain.length && opts.onCert; depth++) {
    const veto = opts.onCert(depth, chain[depth]);
    if (typeof veto === "string" && veto !== "") {
      v.verified = false;
      v.verifyError ??= veto;
      break;
    }
  }

  // With DANE in force OpenSSL has already checked names the RFC 7672 way.
  const names = opts.names ?? (opts.serverName ? [opts.serverName] : []);
  if (v.method !== "dane" && names.length > 0 && chain.length > 0) {
    v.nameChecked = true;
    // OpenSSL has parsed the leaf already; re-parsing its DER in JS (pkijs) cost ~1 MB of garbage per
    // handshake, which grew V8's young generation to its maximum (+48 MB RSS in bench/tls_handshakes.ts).
    v.nameMatched = checkHostname(ssl.peerNames(), names);
  }

  if (opts.requireOcsp) {
    const resp = stream.ocspResponse;
    // The issuer is trusted only from a verified chain: otherwise a peer could bring a fake issuer and a
    // "good" response signed by it.
    const issuer = v.verified ? ssl.verifiedChain()[1] : undefined;
    if (!resp) v.ocsp = { ok: false, status: "invalid", reason: "no OCSP response stapled" };
    else if (!v.verified) v.ocsp = { ok: false, status: "invalid", reason: "certificate chain not verified" };
    else if (!issuer) v.ocsp = { ok: false, status: "invalid", reason: "issuer certificate unknown" };
    else {
      try {
        // Loaded on the first stapled response: pkijs is start-up time a Ferry that never sees one need not pay.
        const { checkOcspResponse } = await import("./ocsp.ts");
        v.ocsp = await checkOcspResponse(resp, chain[0], issuer);
      } catch (e) {
        v.ocsp = { ok: false, status: "invalid", reason: errorMessage(e) };
      }
    }
    if (!v.ocsp.ok) {
      v.verified = false;
      v.verifyError ??= `OCSP: ${v.ocsp.reason ?? v.ocsp.status}`;
    }
  }
  return v;
}
