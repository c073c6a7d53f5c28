/**
 * The one place Ferry touches OpenSSL 3 (libssl.so.3 / libcrypto.so.3) through Deno FFI: symbol table,
 * constants (named as in /usr/include/openssl headers), and two handle classes, `NativeContext` (SSL_CTX)
 * and `NativeSsl` (SSL over a pair of memory BIOs), so no other file ever sees a pointer.
 * Trusts: the OpenSSL library at the configured path. Everything it returns is copied into JS memory;
 * every object allocated here is freed exactly once by `free()`.
 */

// --- constants (header names beside each) -------------------------------------------------------------

/** ssl.h: SSL_ERROR_* results of SSL_get_error. */
export const SSL_ERROR_NONE = 0;
export const SSL_ERROR_SSL = 1;
export const SSL_ERROR_WANT_READ = 2;
export const SSL_ERROR_WANT_WRITE = 3;
export const SSL_ERROR_SYSCALL = 5;
export const SSL_ERROR_ZERO_RETURN = 6;

const SSL_CTRL_SESS_NUMBER = 20; // ssl.h
const SSL_CTRL_MODE = 33; // ssl.h
const SSL_CTRL_SET_SESS_CACHE_SIZE = 42; // ssl.h
const SSL_CTRL_SET_SESS_CACHE_MODE = 44; // ssl.h
const SSL_CTRL_SET_TLSEXT_SERVERNAME_CB = 53; // ssl.h
const SSL_CTRL_SET_TLSEXT_HOSTNAME = 55; // ssl.h
const SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB = 63; // ssl.h
const SSL_CTRL_SET_TLSEXT_STATUS_REQ_TYPE = 65; // ssl.h
const SSL_CTRL_GET_TLSEXT_STATUS_REQ_OCSP_RESP = 70; // ssl.h
const SSL_CTRL_SET_TLSEXT_STATUS_REQ_OCSP_RESP = 71; // ssl.h
const SSL_CTRL_SET_GROUPS_LIST = 92; // ssl.h
const SSL_CTRL_SET_MIN_PROTO_VERSION = 123; // ssl.h
const SSL_CTRL_SET_MAX_PROTO_VERSION = 124; // ssl.h
const TLSEXT_NAMETYPE_host_name = 0; // tls1.h
const TLSEXT_STATUSTYPE_ocsp = 1; // tls1.h
const SSL_TLSEXT_ERR_OK = 0; // tls1.h
const SSL_TLSEXT_ERR_NOACK = 3; // tls1.h
const SSL_FILETYPE_PEM = 1; // ssl.h (= X509_FILETYPE_PEM, x509.h)
const SSL_MODE_RELEASE_BUFFERS = 0x10; // ssl.h
const OPENSSL_INIT_NO_ATEXIT = 0x00080000n; // crypto.h
const SSL_OP_NO_COMPRESSION = 1n << 17n; // ssl.h SSL_OP_BIT(17)
const SSL_OP_NO_RENEGOTIATION = 1n << 30n; // ssl.h SSL_OP_BIT(30)
const DANE_FLAG_NO_DANE_EE_NAMECHECKS = 1n; // x509_vfy.h (1L << 0)
const NID_commonName = 13; // obj_mac.h
const NID_subject_alt_name = 85; // obj_mac.h
const GEN_DNS = 2; // x509v3.h
const GEN_IPADD = 7; // x509v3.h

/** ssl.h: SSL_SESS_CACHE_* session cache modes (SSL_CTX_set_session_cache_mode). */
export const SSL_SESS_CACHE_OFF = 0x0000;
export const SSL_SESS_CACHE_SERVER = 0x0002;

/** ssl.h: SSL_VERIFY_NONE / SSL_VERIFY_PEER / SSL_VERIFY_FAIL_IF_NO_PEER_CERT. */
export const SSL_VERIFY_NONE = 0;
export const SSL_VERIFY_PEER = 1;
export const SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 2;
/** prov_ssl.h: protocol version numbers. */
export const TLS1_2_VERSION = 0x0303;
export const TLS1_3_VERSION = 0x0304;
/** x509_vfy.h: X509_V_OK. */
export const X509_V_OK = 0;

// --- library ---------------------------------------------------------------------------------------------

const sslSymbols = {
  TLS_method: { parameters: [], result: "pointer" },
  SSL_CTX_new: { parameters: ["pointer"], result: "pointer" },
  SSL_CTX_free: { parameters: ["pointer"], result: "void" },
  SSL_CTX_ctrl: { parameters: ["pointer", "i32", "i64", "pointer"], result: "i64" },
  SSL_CTX_ctrl_buf: { name: "SSL_CTX_ctrl", parameters: ["pointer", "i32", "i64", "buffer"], result: "i64" },
  SSL_CTX_callback_ctrl: { parameters: ["pointer", "i32", "function"], result: "i64" },
  SSL_CTX_set_options: { parameters: ["pointer", "u64"], result: "u64" },
  SSL_CTX_use_certificate_chain_file: { parameters: ["pointer", "buffer"], result: "i32" },
  SSL_CTX_use_PrivateKey_file: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  SSL_CTX_check_private_key: { parameters: ["pointer"], result: "i32" },
  SSL_CTX_get0_certificate: { parameters: ["pointer"], result: "pointer" },
  SSL_CTX_set_cipher_list: { parameters: ["pointer", "buffer"], result: "i32" },
  SSL_CTX_set_ciphersuites: { parameters: ["pointer", "buffer"], result: "i32" },
  SSL_CTX_set_verify: { parameters: ["pointer", "i32", "function"], result: "void" },
  SSL_CTX_load_verify_locations: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  SSL_CTX_set_default_verify_paths: { parameters: ["pointer"], result: "i32" },
  SSL_load_client_CA_file: { parameters: ["buffer"], result: "pointer" },
  SSL_CTX_set_client_CA_list: { parameters: ["pointer", "pointer"], result: "void" },
  SSL_CTX_set_session_id_context: { parameters: ["pointer", "buffer", "u32"], result: "i32" },
  SSL_CTX_dane_enable: { parameters: ["pointer"], result: "i32" },
  SSL_new: { parameters: ["pointer"], result: "pointer" },
  SSL_free: { parameters: ["pointer"], result: "void" },
  SSL_ctrl: { parameters: ["pointer", "i32", "i64", "pointer"], result: "i64" },
  // The same function with parg as JS memory. Passing a buffer avoids Deno.UnsafePointer.of, which Deno
  // tracks per call (a WeakMap entry from pointer to buffer); calling it a few times per handshake made
  // RSS climb (+70 MB over 20k bare handshakes, +10 MB without) while malloc in-use memory stayed flat.
  SSL_ctrl_buf: { name: "SSL_ctrl", parameters: ["pointer", "i32", "i64", "buffer"], result: "i64" },
  SSL_set_bio: { parameters: ["pointer", "pointer", "pointer"], result: "void" },
  SSL_set_accept_state: { parameters: ["pointer"], result: "void" },
  SSL_set_connect_state: { parameters: ["pointer"], result: "void" },
  SSL_do_handshake: { parameters: ["pointer"], result: "i32" },
  SSL_read: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  SSL_write: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  SSL_shutdown: { parameters: ["pointer"], result: "i32" },
  SSL_get_error: { parameters: ["pointer", "i32"], result: "i32" },
  SSL_get_version: { parameters: ["pointer"], result: "pointer" },
  SSL_get_current_cipher: { parameters: ["pointer"], result: "pointer" },
  SSL_CIPHER_get_name: { parameters: ["pointer"], result: "pointer" },
  SSL_CIPHER_get_bits: { parameters: ["pointer", "pointer"], result: "i32" },
  SSL_get_servername: { parameters: ["pointer", "i32"], result: "pointer" },
  SSL_get_SSL_CTX: { parameters: ["pointer"], result: "pointer" },
  SSL_set_SSL_CTX: { parameters: ["pointer", "pointer"], result: "pointer" },
  SSL_get_certificate: { parameters: ["pointer"], result: "pointer" },
  SSL_get1_peer_certificate: { parameters: ["pointer"], result: "pointer" },
  SSL_get_peer_cert_chain: { parameters: ["pointer"], result: "pointer" },
  SSL_get0_verified_chain: { parameters: ["pointer"], result: "pointer" },
  SSL_get_verify_result: { parameters: ["pointer"], result: "i64" },
  SSL_set_verify: { parameters: ["pointer", "i32", "function"], result: "void" },
  SSL_dane_enable: { parameters: ["pointer", "buffer"], result: "i32" },
  SSL_dane_set_flags: { parameters: ["pointer", "u64"], result: "u64" },
  SSL_dane_tlsa_add: { parameters: ["pointer", "u8", "u8", "u8", "buffer", "usize"], result: "i32" },
  SSL_get0_dane_authority: { parameters: ["pointer", "pointer", "pointer"], result: "i32" },
  SSL_get0_dane_tlsa: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "pointer", "pointer"],
    result: "i32",
  },
  SSL_add1_host: { parameters: ["pointer", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

const cryptoSymbols = {
  BIO_new: { parameters: ["pointer"], result: "pointer" },
  BIO_s_mem: { parameters: [], result: "pointer" },
  BIO_free: { parameters: ["pointer"], result: "i32" },
  BIO_read: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  BIO_write: { parameters: ["pointer", "buffer", "i32"], result: "i32" },
  BIO_ctrl_pending: { parameters: ["pointer"], result: "usize" },
  CRYPTO_memdup: { parameters: ["buffer", "usize", "buffer", "i32"], result: "pointer" },
  CRYPTO_free: { parameters: ["pointer", "buffer", "i32"], result: "void" },
  X509_get_ext_d2i: { parameters: ["pointer", "i32", "buffer", "buffer"], result: "pointer" },
  GENERAL_NAMES_free: { parameters: ["pointer"], result: "void" },
  GENERAL_NAME_get0_value: { parameters: ["pointer", "buffer"], result: "pointer" },
  X509_NAME_get_index_by_NID: { parameters: ["pointer", "i32", "i32"], result: "i32" },
  X509_NAME_get_entry: { parameters: ["pointer", "i32"], result: "pointer" },
  X509_NAME_ENTRY_get_data: { parameters: ["pointer"], result: "pointer" },
  ASN1_STRING_to_UTF8: { parameters: ["buffer", "pointer"], result: "i32" },
  ASN1_STRING_length: { parameters: ["pointer"], result: "i32" },
  ASN1_STRING_get0_data: { parameters: ["pointer"], result: "pointer" },
  ERR_get_error: { parameters: [], result: "u64" },
  ERR_error_string_n: { parameters: ["u64", "buffer", "usize"], result: "void" },
  ERR_clear_error: { parameters: [], result: "void" },
  OPENSSL_init_crypto: { parameters: ["u64", "pointer"], result: "i32" },
  X509_free: { parameters: ["pointer"], result: "void" },
  X509_get_subject_name: { parameters: ["pointer"], result: "pointer" },
  X509_NAME_oneline: { parameters: ["pointer", "buffer", "i32"], result: "pointer" },
  X509_verify_cert_error_string: { parameters: ["i64"], result: "pointer" },
  i2d_X509: { parameters: ["pointer", "buffer"], result: "i32" },
  OPENSSL_sk_num: { parameters: ["pointer"], result: "i32" },
  OPENSSL_sk_value: { parameters: ["pointer", "i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

type Lib = {
  ssl: Deno.DynamicLibrary<typeof sslSymbols>["symbols"];
  crypto: Deno.DynamicLibrary<typeof cryptoSymbols>["symbols"];
};

const paths = { ssl: "libssl.so.3", crypto: "libcrypto.so.3" };
let opened: Lib | undefined;

/**
 * Sets where libssl and libcrypto are loaded from (before first use); defaults "libssl.so.3" and
 * "libcrypto.so.3" found by the dynamic linker.
 */
export function setOpenSslPaths(p: { ssl?: string; crypto?: string }): void {
  if (opened) throw new Error("OpenSSL is already loaded; set its paths before the first TLS use");
  if (p.ssl) paths.ssl = p.ssl;
  if (p.crypto) paths.crypto = p.crypto;
}

/**
 * Opens the libraries and creates the process-wide callbacks now rather than on first use (for
 * start-up checks, and for tests whose resource sanitizer would see them as leaks of the first test).
 */
export function loadOpenSsl(): void {
  lib();
  serverNameCallback();
  statusCallback();
  acceptAnyCallback();
}

function lib(): Lib {
  if (!opened) {
    // libcrypto first, so a custom libssl finds the matching libcrypto already loaded.
    const crypto = Deno.dlopen(paths.crypto, cryptoSymbols).symbols;
    // No atexit cleanup: OPENSSL_cleanup() at exit() frees OpenSSL's global state while other threads may
    // still be running their own OpenSSL thread-exit cleanup (OpenSSL assumes every thread has stopped).
    // `deno test --parallel` exits while test-module threads that made TLS connections are still ending,
    // and a full test run once aborted there with "double free or corruption". The first init call in the
    // process decides, so it comes before anything else of OpenSSL runs; the OS reclaims the memory anyway.
    crypto.OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, null);
    const ssl = Deno.dlopen(paths.ssl, sslSymbols).symbols;
    opened = { ssl, crypto };
  }
  return opened;
}

// --- helpers ---------------------------------------------------------------------------------------------

const enc = new TextEncoder();
const dec = new TextDecoder();
/** The "file" argument of CRYPTO_memdup / CRYPTO_free (only OpenSSL's memory debugging reads it). */
const allocTag = enc.encode("ferry/tls\0");

/** A NUL-terminated copy of `s` for C. */
export function cstr(s: string): Uint8Array<ArrayBuffer> {
  return enc.encode(s + "\0");
}

function readCString(p: Deno.PointerValue): string | undefined {
  return p === null ? undefined : Deno.UnsafePointerView.getCString(p);
}

function addr(p: Deno.PointerValue): bigint {
  return p === null ? 0n : BigInt(Deno.UnsafePointer.value(p));
}

/** Drains OpenSSL's thread error queue into one string ("" when empty). */
export function takeErrors(): string {
  const { crypto } = lib();
  const buf = new Uint8Array(256);
  const out: string[] = [];
  for (let e = crypto.ERR_get_error(); BigInt(e) !== 0n; e = crypto.ERR_get_error()) {
    crypto.ERR_error_string_n(BigInt(e), buf, BigInt(buf.length));
    const s = dec.decode(buf.subarray(0, buf.indexOf(0)));
    // "error:0A000086:SSL routines::certificate verify failed" → keep the readable tail
    out.push(s.replace(/^error:[0-9A-Fa-f]+:/, "").replace(/::/, ": "));
  }
  return out.join("; ");
}

/** Clears the error queue so the next failure reports only its own reasons. */
export function clearErrors(): void {
  lib().crypto.ERR_clear_error();
}

/** The text X509_verify_cert_error_string gives for a verify result. */
export function verifyErrorString(code: number): string {
  return readCString(lib().crypto.X509_verify_cert_error_string(BigInt(code))) ?? `verify error ${code}`;
}

// Scratch memory for i2d_X509, made once: its address is taken once, so no per-certificate
// Deno.UnsafePointer.of (see SSL_ctrl_buf). Safe to share: FFI calls here are synchronous.
let derScratch = new Uint8Array(0);
let derScratchAddr = 0n;
const derCursor = new BigUint64Array(1); // the `unsigned char **pp` of i2d_X509

function x509Der(x: Deno.PointerValue): Uint8Array {
  const { crypto } = lib();
  const len = crypto.i2d_X509(x, null);
  if (len <= 0) return new Uint8Array(0);
  if (derScratch.length < len) {
    derScratch = new Uint8Array(Math.max(len, 16384));
    derScratchAddr = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(derScratch)));
  }
  // i2d_X509 writes at *pp and advances it; *pp is our own buffer, so nothing to free.
  derCursor[0] = derScratchAddr;
  const n = crypto.i2d_X509(x, derCursor);
  return n === len ? derScratch.slice(0, len) : new Uint8Array(0);
}

function stackDer(sk: Deno.PointerValue): Uint8Array[] {
  if (sk === null) return [];
  const { crypto } = lib();
  const out: Uint8Array[] = [];
  const n = crypto.OPENSSL_sk_num(sk);
  for (let i = 0; i < n; i++) out.push(x509Der(crypto.OPENSSL_sk_value(sk, i)));
  return out;
}

/** An ASN1_STRING as text (ASN1_STRING_to_UTF8), undefined when OpenSSL cannot convert it. */
function asn1Text(str: Deno.PointerValue): string | undefined {
  if (str === null) return undefined;
  const { crypto } = lib();
  const out = new BigUint64Array(1);
  const len = crypto.ASN1_STRING_to_UTF8(out, str);
  const p = Deno.UnsafePointer.create(out[0]);
  if (p === null) return undefined;
  try {
    if (len < 0) return undefined;
    const bytes = new Uint8Array(len);
    Deno.UnsafePointerView.copyInto(p, bytes);
    return dec.decode(bytes);
  } finally {
    crypto.CRYPTO_free(p, allocTag, 0); // OPENSSL_free of the converted copy
  }
}

/** An iPAddress subjectAltName (4 or 16 octets) in text form; undefined for anything else. */
function asn1Ip(str: Deno.PointerValue): string | undefined {
  if (str === null) return undefined;
  const { crypto } = lib();
  const len = crypto.ASN1_STRING_length(str);
  const p = crypto.ASN1_STRING_get0_data(str);
  if (p === null || (len !== 4 && len !== 16)) return undefined;
  const b = new Uint8Array(len);
  Deno.UnsafePointerView.copyInto(p, b);
  if (len === 4) return b.join(".");
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((b[i] << 8) | b[i + 1]).toString(16));
  return groups.join(":");
}

/** dNSName and iPAddress subjectAltNames and subject CNs of `x` (every SAN extension, in order). */
function x509Names(x: Deno.PointerObject): { dns: string[]; cn: string[]; ip: string[] } {
  const { crypto } = lib();
  const out = { dns: [] as string[], cn: [] as string[], ip: [] as string[] };
  const idx = new Int32Array([-1]); // X509_get_ext_d2i walks repeated extensions through *idx
  const type = new Int32Array(1);
  for (;;) {
    const names = crypto.X509_get_ext_d2i(x, NID_subject_alt_name, null, idx);
    if (names === null) break;
    try {
      const n = crypto.OPENSSL_sk_num(names);
      for (let i = 0; i < n; i++) {
        const v = crypto.GENERAL_NAME_get0_value(crypto.OPENSSL_sk_value(names, i), type);
        if (type[0] === GEN_IPADD) {
          const ip = asn1Ip(v);
          if (ip !== undefined) out.ip.push(ip);
          continue;
        }
        if (type[0] !== GEN_DNS) continue;
        const text = asn1Text(v);
        if (text !== undefined) out.dns.push(text);
      }
    } finally {
      crypto.GENERAL_NAMES_free(names); // X509_get_ext_d2i returns a fresh copy we own
    }
  }
  clearErrors(); // a SAN that fails to decode leaves reasons behind; it simply presents no names
  const subject = crypto.X509_get_subject_name(x); // borrowed
  for (let i = -1; (i = crypto.X509_NAME_get_index_by_NID(subject, NID_commonName, i)) >= 0;) {
    const text = asn1Text(crypto.X509_NAME_ENTRY_get_data(crypto.X509_NAME_get_entry(subject, i)));
    if (text !== undefined) out.cn.push(text);
  }
  return out;
}

// --- callbacks (one of each for the process; handlers looked up by SSL_CTX address) --------------------

type ServerNameHandler = (name: string | undefined) => NativeContext | undefined;
type StatusHandler = (certificateId: bigint) => Uint8Array | undefined;
const serverNameHandlers = new Map<bigint, ServerNameHandler>();
const statusHandlers = new Map<bigint, StatusHandler>();
// Made once and kept for the life of the process (OpenSSL contexts may hold them at any time).
let serverNameCb: Deno.PointerObject | undefined;
let statusCb: Deno.PointerObject | undefined;
let acceptAnyCb: Deno.PointerObject | undefined;

function serverNameCallback(): Deno.PointerObject {
  serverNameCb ??= new Deno.UnsafeCallback(
    { parameters: ["pointer", "pointer", "pointer"], result: "i32" },
    (s) => {
      try {
        const { ssl } = lib();
        const handler = serverNameHandlers.get(addr(ssl.SSL_get_SSL_CTX(s)));
        const target = handler?.(readCString(ssl.SSL_get_servername(s, TLSEXT_NAMETYPE_host_name)));
        if (target && !target.freed) ssl.SSL_set_SSL_CTX(s, ctxPointer(target));
      } catch { /* a failing handler keeps the default certificate */ }
      return SSL_TLSEXT_ERR_OK;
    },
  ).pointer;
  return serverNameCb;
}

function statusCallback(): Deno.PointerObject {
  statusCb ??= new Deno.UnsafeCallback(
    { parameters: ["pointer", "pointer"], result: "i32" },
    (s) => {
      try {
        const { ssl, crypto } = lib();
        const handler = statusHandlers.get(addr(ssl.SSL_get_SSL_CTX(s)));
        const resp = handler?.(addr(ssl.SSL_get_certificate(s)));
        if (!resp || resp.length === 0) return SSL_TLSEXT_ERR_NOACK;
        // OpenSSL frees the stapled response itself (when the SSL is freed, or on the next staple), so
        // it must come from OpenSSL's allocator: CRYPTO_memdup copies it there in one call.
        const p = crypto.CRYPTO_memdup(resp as Uint8Array<ArrayBuffer>, BigInt(resp.length), allocTag, 0);
        if (p === null) return SSL_TLSEXT_ERR_NOACK;
        ssl.SSL_ctrl(s, SSL_CTRL_SET_TLSEXT_STATUS_REQ_OCSP_RESP, BigInt(resp.length), p);
        return SSL_TLSEXT_ERR_OK;
      } catch {
        return SSL_TLSEXT_ERR_NOACK;
      }
    },
  ).pointer;
  return statusCb;
}

/** A verify callback that accepts whatever OpenSSL concluded; the result stays in SSL_get_verify_result. */
function acceptAnyCallback(): Deno.PointerObject {
  acceptAnyCb ??= new Deno.UnsafeCallback(
    { parameters: ["i32", "pointer"], result: "i32" },
    () => 1,
  ).pointer;
  return acceptAnyCb;
}

/** Module-private access to a context's pointer (set in NativeContext's static block). */
let ctxPointer: (c: NativeContext) => Deno.PointerObject;

// --- SSL_CTX ---------------------------------------------------------------------------------------------

/** An owned SSL_CTX. Methods return false on failure; read the reason with `takeErrors()`. */
export class NativeContext {
  #p: Deno.PointerObject | null;

  /** Creates an SSL_CTX for TLS_method with compression and renegotiation off. */
  constructor() {
    const { ssl } = lib();
    const p = ssl.SSL_CTX_new(ssl.TLS_method());
    if (p === null) throw new Error(`SSL_CTX_new failed: ${takeErrors()}`);
    this.#p = p;
    ssl.SSL_CTX_set_options(p, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    ssl.SSL_CTX_ctrl(p, SSL_CTRL_MODE, BigInt(SSL_MODE_RELEASE_BUFFERS), null);
  }

  static {
    ctxPointer = (c) => {
      if (c.#p === null) throw new Error("SSL_CTX already freed");
      return c.#p;
    };
  }

  get #ptr(): Deno.PointerObject {
    return ctxPointer(this);
  }

  /** Whether `free()` was called. */
  get freed(): boolean {
    return this.#p === null;
  }

  /** Loads a PEM certificate chain (leaf first); several calls with different key types coexist. */
  useCertificateChainFile(path: string): boolean {
    return lib().ssl.SSL_CTX_use_certificate_chain_file(this.#ptr, cstr(path)) === 1;
  }

  /** Loads a PEM private key for the most recently loaded certificate. */
  usePrivateKeyFile(path: string): boolean {
    return lib().ssl.SSL_CTX_use_PrivateKey_file(this.#ptr, cstr(path), SSL_FILETYPE_PEM) === 1;
  }

  /** Checks that the last loaded key matches the last loaded certificate. */
  checkPrivateKey(): boolean {
    return lib().ssl.SSL_CTX_check_private_key(this.#ptr) === 1;
  }

  /** An opaque id of the most recently loaded certificate (matches `certificateId` in the status handler). */
  currentCertificateId(): bigint {
    return addr(lib().ssl.SSL_CTX_get0_certificate(this.#ptr));
  }

  /** Sets minimum and maximum protocol versions (TLS1_2_VERSION …; 0 = library default). */
  setProtocolVersions(min: number, max: number): boolean {
    const { ssl } = lib();
    return ssl.SSL_CTX_ctrl(this.#ptr, SSL_CTRL_SET_MIN_PROTO_VERSION, BigInt(min), null) === 1n &&
      ssl.SSL_CTX_ctrl(this.#ptr, SSL_CTRL_SET_MAX_PROTO_VERSION, BigInt(max), null) === 1n;
  }

  /** TLS ≤ 1.2 cipher list (OpenSSL cipher string). */
  setCipherList(list: string): boolean {
    return lib().ssl.SSL_CTX_set_cipher_list(this.#ptr, cstr(list)) === 1;
  }

  /** TLS 1.3 ciphersuites ("TLS_AES_256_GCM_SHA384:…"). */
  setCiphersuites(list: string): boolean {
    return lib().ssl.SSL_CTX_set_ciphersuites(this.#ptr, cstr(list)) === 1;
  }

  /** Key exchange groups ("X25519:P-256"). */
  setGroups(list: string): boolean {
    return BigInt(lib().ssl.SSL_CTX_ctrl_buf(this.#ptr, SSL_CTRL_SET_GROUPS_LIST, 0n, cstr(list))) === 1n;
  }

  /**
   * Sets the verify mode. With `acceptAny`, the handshake goes on whatever the chain's verdict; the verdict
   * is then read with `NativeSsl.verifyResult()`.
   */
  setVerify(mode: number, acceptAny: boolean): void {
    lib().ssl.SSL_CTX_set_verify(this.#ptr, mode, acceptAny ? acceptAnyCallback() : null);
  }

  /** Trust anchors from a PEM file and/or a hashed directory. */
  loadVerifyLocations(file?: string, dir?: string): boolean {
    return lib().ssl.SSL_CTX_load_verify_locations(
      this.#ptr,
      file === undefined ? null : cstr(file),
      dir === undefined ? null : cstr(dir),
    ) === 1;
  }

  /** Trust anchors from the system default locations. */
  setDefaultVerifyPaths(): boolean {
    return lib().ssl.SSL_CTX_set_default_verify_paths(this.#ptr) === 1;
  }

  /** Names the CAs sent in CertificateRequest, read from a PEM file. */
  setClientCaListFromFile(file: string): boolean {
    const { ssl } = lib();
    const list = ssl.SSL_load_client_CA_file(cstr(file));
    if (list === null) return false;
    ssl.SSL_CTX_set_client_CA_list(this.#ptr, list); // takes ownership of the list
    return true;
  }

  /** Session id context, needed for resumption when client certificates are requested. */
  setSessionIdContext(id: string): boolean {
    const b = enc.encode(id);
    return lib().ssl.SSL_CTX_set_session_id_context(this.#ptr, b, b.length) === 1;
  }

  /** Calls `handler` with the client's SNI on each handshake; a returned context replaces this one. */
  onServerName(handler: ServerNameHandler): void {
    serverNameHandlers.set(addr(this.#ptr), handler);
    lib().ssl.SSL_CTX_callback_ctrl(this.#ptr, SSL_CTRL_SET_TLSEXT_SERVERNAME_CB, serverNameCallback());
  }

  /**
   * Calls `handler` when a client asks for OCSP stapling; the bytes it returns are stapled (none → no
   * staple). `certificateId` identifies the certificate chosen (see `currentCertificateId`).
   */
  onStatusRequest(handler: StatusHandler): void {
    statusHandlers.set(addr(this.#ptr), handler);
    lib().ssl.SSL_CTX_callback_ctrl(this.#ptr, SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB, statusCallback());
  }

  /**
   * Session cache mode (SSL_SESS_CACHE_*) and, when given, the most sessions it keeps (≥ 1; OpenSSL's
   * default SSL_SESSION_CACHE_MAX_SIZE_DEFAULT is 20480, and 0 would mean unlimited).
   */
  setSessionCache(mode: number, size?: number): void {
    const { ssl } = lib();
    ssl.SSL_CTX_ctrl(this.#ptr, SSL_CTRL_SET_SESS_CACHE_MODE, BigInt(mode), null);
    if (size !== undefined) {
      ssl.SSL_CTX_ctrl(this.#ptr, SSL_CTRL_SET_SESS_CACHE_SIZE, BigInt(Math.max(1, size)), null);
    }
  }

  /** Number of sessions now in the internal session cache (SSL_CTX_sess_number). */
  sessionCount(): number {
    return Number(lib().ssl.SSL_CTX_ctrl(this.#ptr, SSL_CTRL_SESS_NUMBER, 0n, null));
  }

  /** Enables DANE on this context (needed before `NativeSsl.daneEnable`). */
  daneEnable(): boolean {
    return lib().ssl.SSL_CTX_dane_enable(this.#ptr) > 0;
  }

  /** Frees the SSL_CTX (SSL objects still using it keep it alive through OpenSSL's reference count). */
  free(): void {
    if (this.#p === null) return;
    serverNameHandlers.delete(addr(this.#p));
    statusHandlers.delete(addr(this.#p));
    lib().ssl.SSL_CTX_free(this.#p);
    this.#p = null;
  }
}

// --- SSL over memory BIOs --------------------------------------------------------------------------------

/** Outcome of one SSL_do_handshake / SSL_read / SSL_write / SSL_shutdown call. */
export interface IoResult {
  /** The return value of the call */
  ret: number;
  /** SSL_get_error for it (SSL_ERROR_NONE when ret > 0) */
  error: number;
  /** The error queue, drained, when the call failed hard */
  reason?: string;
}

/** An owned SSL whose network side is two memory BIOs: feed received bytes in, drain bytes to send out. */
export class NativeSsl {
  #p: Deno.PointerObject | null;
  #rbio: Deno.PointerObject;
  #wbio: Deno.PointerObject;

  /** Creates an SSL from `ctx` in accept (server) or connect (client) state. */
  constructor(ctx: NativeContext, server: boolean) {
    const { ssl, crypto } = lib();
    const p = ssl.SSL_new(ctxPointer(ctx));
    if (p === null) throw new Error(`SSL_new failed: ${takeErrors()}`);
    const r = crypto.BIO_new(crypto.BIO_s_mem());
    const w = crypto.BIO_new(crypto.BIO_s_mem());
    if (r === null || w === null) {
      // No BIO is attached yet, so SSL_free does not free the one that was made.
      if (r !== null) crypto.BIO_free(r);
      if (w !== null) crypto.BIO_free(w);
      ssl.SSL_free(p);
      throw new Error(`BIO_new failed: ${takeErrors()}`);
    }
    ssl.SSL_set_bio(p, r, w); // SSL_free frees both BIOs from now on
    if (server) ssl.SSL_set_accept_state(p);
    else ssl.SSL_set_connect_state(p);
    this.#p = p;
    this.#rbio = r;
    this.#wbio = w;
  }

  get #s(): Deno.PointerObject {
    if (this.#p === null) throw new Error("SSL already freed");
    return this.#p;
  }

  /** Whether `free()` was called. */
  get freed(): boolean {
    return this.#p === null;
  }

  #result(ret: number): IoResult {
    if (ret > 0) return { ret, error: SSL_ERROR_NONE };
    const error = lib().ssl.SSL_get_error(this.#s, ret);
    const reason = error === SSL_ERROR_WANT_READ || error === SSL_ERROR_WANT_WRITE ? undefined : takeErrors();
    return { ret, error, reason };
  }

  /** One SSL_do_handshake step. */
  handshake(): IoResult {
    clearErrors();
    return this.#result(lib().ssl.SSL_do_handshake(this.#s));
  }

  /** SSL_read into `p`. */
  read(p: Uint8Array<ArrayBuffer>): IoResult {
    clearErrors();
    return this.#result(lib().ssl.SSL_read(this.#s, p, Math.min(p.length, 0x7fffffff)));
  }

  /** SSL_write of `p` (all of it with memory BIOs, or an error). */
  write(p: Uint8Array<ArrayBuffer>): IoResult {
    clearErrors();
    return this.#result(lib().ssl.SSL_write(this.#s, p, p.length));
  }

  /** Queues close_notify (one SSL_shutdown call). */
  shutdown(): void {
    clearErrors();
    lib().ssl.SSL_shutdown(this.#s);
    clearErrors();
  }

  /** Hands bytes received from the peer to OpenSSL. */
  feed(data: Uint8Array<ArrayBuffer>): void {
    if (this.#p === null) throw new Error("SSL already freed"); // its BIOs went with it
    if (data.length === 0) return;
    const n = lib().crypto.BIO_write(this.#rbio, data, data.length);
    if (n !== data.length) throw new Error(`BIO_write took ${n} of ${data.length} bytes`);
  }

  /** Takes the bytes OpenSSL wants sent to the peer (undefined when none). */
  drain(): Uint8Array<ArrayBuffer> | undefined {
    if (this.#p === null) return undefined;
    const { crypto } = lib();
    const pending = Number(crypto.BIO_ctrl_pending(this.#wbio));
    if (pending === 0) return undefined;
    const out = new Uint8Array(pending);
    const n = crypto.BIO_read(this.#wbio, out, pending);
    return n > 0 ? out.subarray(0, n) : undefined;
  }

  /** Client: sets SNI (OpenSSL keeps its own copy of the name). */
  setHostName(name: string): boolean {
    return BigInt(
      lib().ssl.SSL_ctrl_buf(
        this.#s,
        SSL_CTRL_SET_TLSEXT_HOSTNAME,
        BigInt(TLSEXT_NAMETYPE_host_name),
        cstr(name),
      ),
    ) === 1n;
  }

  /** Client: asks the server to staple an OCSP response. */
  requestOcsp(): void {
    lib().ssl.SSL_ctrl(this.#s, SSL_CTRL_SET_TLSEXT_STATUS_REQ_TYPE, BigInt(TLSEXT_STATUSTYPE_ocsp), null);
  }

  /** Client: the stapled OCSP response, copied (undefined when none was stapled). */
  stapledOcsp(): Uint8Array | undefined {
    const out = new BigUint64Array(1);
    const len = Number(lib().ssl.SSL_ctrl_buf(this.#s, SSL_CTRL_GET_TLSEXT_STATUS_REQ_OCSP_RESP, 0n, out));
    const p = Deno.UnsafePointer.create(out[0]); // borrowed: the SSL owns and frees the response
    if (len <= 0 || p === null) return undefined;
    const copy = new Uint8Array(len);
    Deno.UnsafePointerView.copyInto(p, copy);
    return copy;
  }

  /** Per-connection verify mode (overrides the context's). */
  setVerify(mode: number, acceptAny: boolean): void {
    lib().ssl.SSL_set_verify(this.#s, mode, acceptAny ? acceptAnyCallback() : null);
  }

  /**
   * Turns on DANE for this connection with the TLSA base domain; name checks are skipped for DANE-EE(3)
   * matches as RFC 7672 says. Returns false when DANE could not be enabled.
   */
  daneEnable(baseDomain: string): boolean {
    const { ssl } = lib();
    if (ssl.SSL_dane_enable(this.#s, cstr(baseDomain)) <= 0) return false;
    ssl.SSL_dane_set_flags(this.#s, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
    return true;
  }

  /** Adds one TLSA record; >0 usable, 0 unusable (ignored), <0 malformed. */
  daneTlsaAdd(usage: number, selector: number, mtype: number, data: Uint8Array<ArrayBuffer>): number {
    return lib().ssl.SSL_dane_tlsa_add(this.#s, usage, selector, mtype, data, BigInt(data.length));
  }

  /**
   * Adds a further acceptable peer name (after `daneEnable`, which sets the TLSA base domain): for DANE-TA(2)
   * the certificate may match any of them (RFC 7672 §3.2.3).
   */
  addHost(name: string): boolean {
    return lib().ssl.SSL_add1_host(this.#s, cstr(name)) > 0;
  }

  /** Usage of the TLSA record that authenticated the peer, or -1 when DANE did not authenticate. */
  daneMatchedUsage(): number {
    const usage = new Uint8Array(1);
    const selector = new Uint8Array(1);
    const mtype = new Uint8Array(1);
    const depth = lib().ssl.SSL_get0_dane_tlsa(this.#s, usage, selector, mtype, null, null);
    return depth < 0 ? -1 : usage[0];
  }

  /** Depth of the certificate a TLSA record matched, or -1 when DANE did not authenticate. */
  daneAuthorityDepth(): number {
    return lib().ssl.SSL_get0_dane_authority(this.#s, null, null);
  }

  /** Negotiated protocol, OpenSSL's form ("TLSv1.3"). */
  version(): string {
    return readCString(lib().ssl.SSL_get_version(this.#s)) ?? "";
  }

  /** Negotiated cipher name and its secret bits. */
  cipher(): { name: string; bits: number } {
    const { ssl } = lib();
    const c = ssl.SSL_get_current_cipher(this.#s);
    if (c === null) return { name: "", bits: 0 };
    return { name: readCString(ssl.SSL_CIPHER_get_name(c)) ?? "", bits: ssl.SSL_CIPHER_get_bits(c, null) };
  }

  /** SNI as sent by the client (server side) or as set (client side). */
  serverName(): string | undefined {
    return readCString(lib().ssl.SSL_get_servername(this.#s, TLSEXT_NAMETYPE_host_name));
  }

  /** The peer certificate's subject in X509_NAME_oneline form, or undefined when none was sent. */
  peerSubject(): string | undefined {
    const { ssl, crypto } = lib();
    const x = ssl.SSL_get1_peer_certificate(this.#s);
    if (x === null) return undefined;
    try {
      const buf = new Uint8Array(1024);
      crypto.X509_NAME_oneline(crypto.X509_get_subject_name(x), buf, buf.length);
      return dec.decode(buf.subarray(0, buf.indexOf(0)));
    } finally {
      crypto.X509_free(x); // SSL_get1_* returns a reference we own
    }
  }

  /** The leaf the peer sent, DER (undefined when none). */
  peerCertificate(): Uint8Array | undefined {
    const { ssl, crypto } = lib();
    const x = ssl.SSL_get1_peer_certificate(this.#s);
    if (x === null) return undefined;
    try {
      return x509Der(x);
    } finally {
      crypto.X509_free(x);
    }
  }

  /**
   * The RFC 6125 identifiers of the peer's leaf certificate (dNSName subjectAltNames, subject CNs), read
   * from OpenSSL's already parsed certificate; empty lists when there is none.
   */
  peerNames(): { dns: string[]; cn: string[]; ip: string[] } {
    const { ssl, crypto } = lib();
    const x = ssl.SSL_get1_peer_certificate(this.#s);
    if (x === null) return { dns: [], cn: [], ip: [] };
    try {
      return x509Names(x);
    } finally {
      crypto.X509_free(x);
    }
  }

  /** The chain the peer sent, DER; on the client it starts with the leaf, on the server it lacks it. */
  peerChain(): Uint8Array[] {
    return stackDer(lib().ssl.SSL_get_peer_cert_chain(this.#s)); // borrowed stack, not freed here
  }

  /** The chain OpenSSL verified, leaf to trust anchor, DER (empty when verification did not complete). */
  verifiedChain(): Uint8Array[] {
    return stackDer(lib().ssl.SSL_get0_verified_chain(this.#s)); // borrowed
  }

  /** SSL_get_verify_result (X509_V_OK = 0). */
  verifyResult(): number {
    return Number(lib().ssl.SSL_get_verify_result(this.#s));
  }

  /** Frees the SSL and, with it, both memory BIOs. Safe to call twice. */
  free(): void {
    if (this.#p === null) return;
    lib().ssl.SSL_free(this.#p);
    this.#p = null;
  }
}
