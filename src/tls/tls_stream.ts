/**
 * A TLS session (RFC 8446, RFC 5246) as a `ByteStream`: OpenSSL works on memory BIOs and this class moves
 * the bytes between them and the underlying stream (a Deno.Conn or anything else), so STARTTLS can start
 * on a connection that already spoke plaintext. Trusts nothing from the peer; the handshake has a deadline.
 */

import { type ByteStream, writeAll } from "../core/stream.ts";
import type { TlsInfo } from "../core/envelope.ts";
import {
  type NativeSsl,
  SSL_ERROR_SSL,
  SSL_ERROR_SYSCALL,
  SSL_ERROR_WANT_READ,
  SSL_ERROR_WANT_WRITE,
  SSL_ERROR_ZERO_RETURN,
  X509_V_OK,
} from "./_ffi.ts";
import { TlsError } from "./errors.ts";
import type { OcspCheck } from "./ocsp.ts";
import { errorMessage } from "../core/error_message.ts";

/** A server name as RFC 6066 3 allows it: ASCII letters, digits, hyphens (and underscores), dot-separated. */
const SNI_HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9_-]{1,63}(?:\.[A-Za-z0-9_-]{1,63})*\.?$/;
/** Default handshake deadline in milliseconds. */
export const DEFAULT_HANDSHAKE_TIMEOUT = 30_000;

/** Deadline and cancellation for a handshake. */
export interface HandshakeOptions {
  /** Milliseconds the whole handshake may take (default 30 s) */
  timeout?: number;
  /** Aborts the handshake and closes the connection */
  signal?: AbortSignal;
}

/** How the client side judged the server's certificate. */
export interface TlsVerification {
  /** Chain (or DANE) verified and no `onCert` veto */
  verified: boolean;
  /** Why not verified: OpenSSL's verify error text or the `onCert` veto */
  verifyError?: string;
  /** Whether an RFC 6125 name check was made */
  nameChecked: boolean;
  /** Its result, when made */
  nameMatched?: boolean;
  /** What authenticated the server: "dane" (a TLSA record matched) or "pkix" */
  method: "pkix" | "dane";
  /** Depth of the certificate a TLSA record matched (DANE only) */
  daneDepth?: number;
  /** Usage of the TLSA record that matched: 2 DANE-TA or 3 DANE-EE (DANE only) */
  daneUsage?: number;
  /** Check of the stapled OCSP response, when OCSP was required (hostsRequireOcsp) */
  ocsp?: OcspCheck;
}

const MAX_RECORD_PLAINTEXT = 16384;
const NO_BUFFER = new Uint8Array(0);

function errorName(code: number): string {
  switch (code) {
    case SSL_ERROR_SSL:
      return "protocol error";
    case SSL_ERROR_SYSCALL:
      return "unexpected end of stream";
    case SSL_ERROR_ZERO_RETURN:
      return "peer sent close_notify";
    default:
      return `SSL_get_error ${code}`;
  }
}

function versionName(v: string): string {
  // OpenSSL says "TLSv1.3"; Ferry (and Exim's logs) say "TLS1.3".
  return v.replace(/^TLSv/, "TLS");
}

/** One TLS session over an underlying byte stream. Made by `tlsAccept` or `tlsConnect`. */
export class TlsStream implements ByteStream {
  #ssl: NativeSsl | null;
  #conn: ByteStream;
  #server: boolean;
  #rbuf = new Uint8Array(MAX_RECORD_PLAINTEXT + 2048);
  #out: Promise<void> = Promise.resolve();
  #reading = false;
  #established = false;
  #closed = false;
  #done = Promise.withResolvers<void>();
  #info: TlsInfo = { version: "", cipher: "", bits: 0 };
  #peerCertificates: Uint8Array[] = [];
  #ocsp: Uint8Array | undefined;
  #verification: TlsVerification | undefined;

  /** Wraps `ssl` (already in accept or connect state) around `conn`; call `handshake()` next. */
  constructor(conn: ByteStream, ssl: NativeSsl, server: boolean) {
    this.#conn = conn;
    this.#ssl = ssl;
    this.#server = server;
  }

  /** Negotiated protocol, cipher, SNI and peer facts (after the handshake). */
  get info(): TlsInfo {
    return this.#info;
  }

  /**
   * The certificates the peer sent, DER, leaf first. On the client side this is the chain as received;
   * on the server side, the client certificate followed by any chain it sent.
   */
  get peerCertificates(): Uint8Array[] {
    return this.#peerCertificates;
  }

  /** Client side: the OCSP response the server stapled, when it stapled one. */
  get ocspResponse(): Uint8Array | undefined {
    return this.#ocsp;
  }

  /** Client side: how the server certificate was judged (set by `tlsConnect`). */
  get verification(): TlsVerification | undefined {
    return this.#verification;
  }

  /** Whether `close()` was called or the handshake failed. */
  get isClosed(): boolean {
    return this.#closed;
  }

  /** Resolves once the underlying stream has been closed after `close()` (close_notify sent or given up). */
  get closed(): Promise<void> {
    return this.#done.promise;
  }

  /** Internal (tlsConnect): records the verification outcome and sets `info.peerVerified`. */
  setVerification(v: TlsVerification): void {
    this.#verification = v;
    this.#info = { ...this.#info, peerVerified: v.verified && v.nameMatched !== false };
  }

  /** Internal (tlsConnect): the native session, for verification queries after the handshake. */
  get native(): NativeSsl {
    if (!this.#ssl) throw new TlsError("TLS stream is closed");
    return this.#ssl;
  }

  #flush(): Promise<void> {
    const data = this.#ssl?.drain();
    if (data) {
      const conn = this.#conn;
      this.#out = this.#out.then(() => writeAll(conn, data));
    }
    return this.#out;
  }

  /**
   * Runs the handshake to completion: bytes in `initial` are handshake bytes already read from the
   * socket. On failure the connection is closed and a `TlsError` thrown.
   */
  async handshake(opts: HandshakeOptions & { initial?: Uint8Array } = {}): Promise<void> {
    const ssl = this.#ssl;
    if (!ssl || this.#established) throw new TlsError("Handshake already done or stream closed");
    const timeout = opts.timeout ?? DEFAULT_HANDSHAKE_TIMEOUT;
    let why: "timeout" | "abort" | undefined;
    const stop = (w: "timeout" | "abort") => {
      why ??= w;
      try {
        this.#conn.close(); // unblocks a pending read
      } catch { /* already closed */ }
    };
    const onAbort = () => stop("abort");
    const timer = setTimeout(() => stop("timeout"), timeout);
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      if (opts.signal?.aborted) stop("abort");
      if (opts.initial?.length) ssl.feed(opts.initial.slice());
      for (;;) {
        if (why) throw new TlsError("Handshake stopped");
        const r = ssl.handshake();
        await this.#flush(); // sends alerts on failure too
        if (r.ret === 1) break;
        if (r.error === SSL_ERROR_WANT_READ) {
          const n = await this.#conn.read(this.#rbuf);
          if (n === null) throw new TlsError("Peer closed the connection during the TLS handshake");
          ssl.feed(this.#rbuf.subarray(0, n));
        } else if (r.error !== SSL_ERROR_WANT_WRITE) {
          throw new TlsError("TLS handshake failed", { reason: r.reason || errorName(r.error) });
        }
      }
    } catch (e) {
      const err = why === "timeout"
        ? new TlsError(`TLS handshake timed out after ${timeout} ms`)
        : why === "abort"
        ? new TlsError("TLS handshake aborted", { cause: opts.signal?.reason })
        : e instanceof TlsError
        ? e
        : new TlsError("TLS handshake failed", {
          reason: errorMessage(e),
          cause: e,
        });
      this.#teardown();
      throw err;
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
    }
    this.#established = true;
    this.#collect(ssl);
  }

  #collect(ssl: NativeSsl): void {
    const cipher = ssl.cipher();
    const info: TlsInfo = { version: versionName(ssl.version()), cipher: cipher.name, bits: cipher.bits };
    const sni = ssl.serverName();
    // OpenSSL hands over any octets but NUL; only a host name (RFC 6066 3: a DNS name in ASCII) is kept, so a
    // client cannot carry a line break or other text into logs, policy and the spool as its "server name".
    if (sni !== undefined && SNI_HOST_NAME.test(sni)) info.sni = sni;
    const subject = ssl.peerSubject();
    if (subject !== undefined) info.peerSubject = subject;
    if (this.#server) {
      const leaf = ssl.peerCertificate();
      this.#peerCertificates = leaf ? [leaf, ...ssl.peerChain()] : [];
      if (leaf) info.peerVerified = ssl.verifyResult() === X509_V_OK;
    } else {
      this.#peerCertificates = ssl.peerChain();
      this.#ocsp = ssl.stapledOcsp();
    }
    this.#info = info;
  }

  /** Reads decrypted bytes; null at close_notify or end of the underlying stream. */
  async read(p: Uint8Array): Promise<number | null> {
    if (this.#reading) throw new TlsError("TlsStream.read() called while another read is pending");
    if (p.length === 0) return 0;
    this.#reading = true;
    try {
      for (;;) {
        const ssl = this.#ssl;
        if (!ssl || !this.#established) return null;
        const r = ssl.read(p as Uint8Array<ArrayBuffer>);
        if (r.ret > 0) return r.ret;
        if (r.error === SSL_ERROR_ZERO_RETURN) return null;
        if (r.error === SSL_ERROR_WANT_WRITE) {
          await this.#flush();
          continue;
        }
        if (r.error !== SSL_ERROR_WANT_READ) {
          throw new TlsError("TLS read failed", { reason: r.reason || errorName(r.error) });
        }
        await this.#flush(); // answers post-handshake messages (key updates)
        let n: number | null;
        try {
          n = await this.#conn.read(this.#rbuf);
        } catch (e) {
          if (this.#closed) return null;
          throw e;
        }
        if (n === null || !this.#ssl) return null;
        this.#ssl.feed(this.#rbuf.subarray(0, n));
      }
    } finally {
      this.#reading = false;
    }
  }

  /** Encrypts and sends up to one record's worth of `p`; resolves to the bytes taken. */
  async write(p: Uint8Array): Promise<number> {
    const ssl = this.#ssl;
    if (!ssl || !this.#established) throw new TlsError("Write on a closed TLS stream");
    if (p.length === 0) return 0;
    const chunk = p.subarray(0, MAX_RECORD_PLAINTEXT) as Uint8Array<ArrayBuffer>;
    const r = ssl.write(chunk);
    if (r.ret <= 0) throw new TlsError("TLS write failed", { reason: r.reason || errorName(r.error) });
    await this.#flush();
    return r.ret;
  }

  #teardown(): void {
    this.#closed = true;
    this.#ssl?.free();
    this.#ssl = null;
    this.#rbuf = NO_BUFFER; // a stream kept for its info/certificates then holds no 18 KB buffer
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    this.#done.resolve();
  }

  /** Sends close_notify (best effort, up to 1 s), frees the session, then closes the underlying stream. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const ssl = this.#ssl;
    this.#ssl = null;
    this.#rbuf = NO_BUFFER; // a read in progress keeps its own reference and returns null (no #ssl)
    let bye: Uint8Array | undefined;
    if (ssl) {
      try {
        if (this.#established) {
          ssl.shutdown();
          bye = ssl.drain();
        }
      } finally {
        ssl.free();
      }
    }
    const conn = this.#conn;
    const sent = (bye ? this.#out.then(() => writeAll(conn, bye)) : this.#out).catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const cap = new Promise<void>((resolve) => timer = setTimeout(resolve, 1000));
    Promise.race([sent, cap]).finally(() => {
      clearTimeout(timer);
      try {
        conn.close();
      } catch { /* already closed */ }
      this.#done.resolve();
    });
  }
}
