/**
 * Password hashes for SMTP AUTH credentials in config: scrypt (RFC 7914) through node:crypto, written as
 * `scrypt$N$r$p$salt$hash` (salt and hash in base64). Verification compares in constant time.
 * SECURITY: a hash is only as strong as its cost; the defaults (N=16384, r=8, p=1) follow RFC 7914's
 * interactive-login figure. Unknown users still pay one scrypt run, so timing does not tell who exists.
 */

import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";

/** The parts of a stored scrypt hash. */
export interface ScryptHash {
  n: number;
  r: number;
  p: number;
  salt: Uint8Array;
  hash: Uint8Array;
}

const FORMAT = /^scrypt\$(\d{1,8})\$(\d{1,3})\$(\d{1,3})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/;

/** Parses `scrypt$N$r$p$salt$hash`; undefined when the text is not one. */
export function parseScryptHash(text: string): ScryptHash | undefined {
  const m = FORMAT.exec(text);
  if (!m) return undefined;
  const n = Number(m[1]);
  const r = Number(m[2]);
  const p = Number(m[3]);
  // N must be a power of two above 1 (RFC 7914 2).
  if (n < 2 || (n & (n - 1)) !== 0 || r < 1 || p < 1) return undefined;
  try {
    const salt = Uint8Array.fromBase64(m[4]);
    const hash = Uint8Array.fromBase64(m[5]);
    if (salt.length < 8 || hash.length < 16) return undefined;
    return { n, r, p, salt, hash };
  } catch {
    return undefined;
  }
}

function derive(password: string, h: Omit<ScryptHash, "hash">, length: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    scrypt(
      password.normalize("NFC"),
      h.salt,
      length,
      { N: h.n, r: h.r, p: h.p, maxmem: 256 * h.n * h.r + 1024 * 1024 },
      (err, key) => err ? reject(err) : resolve(new Uint8Array(key)),
    );
  });
}

/** Makes a new hash of `password` with a random 16-octet salt. */
export async function hashPassword(
  password: string,
  cost: { n?: number; r?: number; p?: number } = {},
): Promise<string> {
  const params = {
    n: cost.n ?? 16384,
    r: cost.r ?? 8,
    p: cost.p ?? 1,
    salt: new Uint8Array(randomBytes(16)),
  };
  const hash = await derive(password, params, 32);
  return `scrypt$${params.n}$${params.r}$${params.p}$${params.salt.toBase64()}$${hash.toBase64()}`;
}

// Used for unknown users so that a miss costs as much as a wrong password.
const DUMMY: ScryptHash = {
  n: 16384,
  r: 8,
  p: 1,
  salt: new Uint8Array(16),
  hash: new Uint8Array(32),
};

/** True when `password` matches `stored`; an absent or malformed hash costs the same and is false. */
export async function verifyPassword(password: string, stored: string | undefined): Promise<boolean> {
  const parsed = stored === undefined ? undefined : parseScryptHash(stored);
  const h = parsed ?? DUMMY;
  const got = await derive(password, h, h.hash.length);
  return timingSafeEqual(got, h.hash) && parsed !== undefined;
}
