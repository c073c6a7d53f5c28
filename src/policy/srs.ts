/**
 * The Sender Rewriting Scheme (Shevek's SRS as in libsrs2, postsrsd 1.10 and Mail::SRS), byte-compatible with
 * postsrsd: forward `SRS0=HHHH=TT=domain=local@ours` (HHHH: HMAC-SHA1 over the lower-cased timestamp, domain
 * and local part, standard base64, first `hashLength` characters; TT: days mod 1024 in two base32
 * characters), `SRS1=HHHH=host==HHHH=TT=domain=local@ours` for senders already in SRS0/SRS1 form, and the
 * reverse. Hashes are compared case-insensitively and in either base64 alphabet. Pure functions: no I/O.
 */

import { createHmac } from "node:crypto";

const BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const DAY = 86_400_000;
const SLOTS = 1024;

/** Settings shared by forward and reverse. */
export interface SrsOptions {
  /** Secrets: the first signs, every one verifies (rotation) */
  secrets: readonly string[];
  /** Characters of the hash (default 4, as postsrsd) */
  hashLength?: number;
  /** Emit base64url (`-`, `_`) instead of standard base64 (`+`, `/`); postsrsd 1.10 cannot reverse these */
  base64url?: boolean;
  /** Separator after SRS0/SRS1 (default "=") */
  separator?: "=" | "+" | "-";
  /** Days an SRS0 address stays valid (default 21) */
  maxAgeDays?: number;
  /** Now, in ms (tests) */
  now?: number;
}

/** Why an address could not be reversed (or forwarded). */
export class SrsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SrsError";
  }
}

function lower(s: string): string {
  // libsrs2 lower-cases ASCII letters only.
  return s.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

function hash(secret: string, parts: readonly string[], length: number, url: boolean): string {
  const h = createHmac("sha1", secret);
  // The address's octets as they travel (UTF-8 under SMTPUTF8), as postsrsd hashes them; "latin1" kept only the
  // low byte of each character, so a non-ASCII sender got a hash postsrsd refused.
  for (const p of parts) h.update(lower(p), "utf8");
  const b64 = h.digest("base64").slice(0, length);
  return url ? b64.replace(/\+/g, "-").replace(/\//g, "_") : b64;
}

function normalizeHash(h: string): string {
  return h.replace(/-/g, "+").replace(/_/g, "/").toLowerCase();
}

function checkHash(given: string, parts: readonly string[], opts: SrsOptions): void {
  const length = opts.hashLength ?? 4;
  if (given.length < length) throw new SrsError("hash too short");
  const want = normalizeHash(given.slice(0, length));
  for (const secret of opts.secrets) {
    if (normalizeHash(hash(secret, parts, length, false)) === want) return;
  }
  throw new SrsError("hash does not match");
}

/** The two-character timestamp for a time (days since the epoch mod 1024). */
export function srsTimestamp(now: number): string {
  const days = Math.floor(now / DAY);
  return BASE32[(days >> 5) & 31] + BASE32[days & 31];
}

function checkTimestamp(stamp: string, opts: SrsOptions): void {
  if (stamp.length !== 2) throw new SrsError("bad timestamp");
  const a = BASE32.indexOf(stamp[0].toUpperCase());
  const b = BASE32.indexOf(stamp[1].toUpperCase());
  if (a < 0 || b < 0) throw new SrsError("bad timestamp");
  let then = (a << 5) | b;
  const now = Math.floor((opts.now ?? Date.now()) / DAY) % SLOTS;
  if (then > now) then -= SLOTS;
  if (now > then + (opts.maxAgeDays ?? 21)) throw new SrsError("timestamp expired");
}

function splitAddress(address: string): { local: string; domain: string } {
  const at = address.lastIndexOf("@");
  if (at <= 0 || at === address.length - 1) throw new SrsError(`not an address: "${address}"`);
  return { local: address.slice(0, at), domain: address.slice(at + 1) };
}

const TAG = /^(SRS[01])([=+-])/i;

/** True when the local part is in SRS0 or SRS1 form. */
export function isSrs(address: string): boolean {
  return TAG.test(address);
}

/** Rewrites `address` (a sender not of our domain) to an SRS address at `domain`. */
export function srsForward(address: string, domain: string, opts: SrsOptions): string {
  if (opts.secrets.length === 0) throw new SrsError("no secret");
  const { local, domain: host } = splitAddress(address);
  const sep = opts.separator ?? "=";
  const len = opts.hashLength ?? 4;
  const url = opts.base64url ?? false;
  const secret = opts.secrets[0];
  const tag = TAG.exec(local);
  if (tag && tag[1].toUpperCase() === "SRS1") {
    // SRS1=HHHH=host==…: keep the first forwarder's host and user part, re-hash for us.
    const rest = local.slice(5);
    const i = rest.indexOf("=");
    const j = i < 0 ? -1 : rest.indexOf("=", i + 1);
    if (i <= 0 || j < 0 || j === rest.length - 1) throw new SrsError("malformed SRS1 address");
    const srsHost = rest.slice(i + 1, j);
    const srsUser = rest.slice(j + 1);
    return `SRS1${sep}${hash(secret, [srsHost, srsUser], len, url)}=${srsHost}=${srsUser}@${domain}`;
  }
  if (tag) {
    // SRS0 of another forwarder: wrap it as SRS1 naming that forwarder's host.
    const srsUser = local.slice(4);
    return `SRS1${sep}${hash(secret, [host, srsUser], len, url)}=${host}=${srsUser}@${domain}`;
  }
  const stamp = srsTimestamp(opts.now ?? Date.now());
  return `SRS0${sep}${hash(secret, [stamp, host, local], len, url)}=${stamp}=${host}=${local}@${domain}`;
}

/** Reverses an SRS address (its domain is not checked here); throws SrsError when invalid or expired. */
export function srsReverse(address: string, opts: SrsOptions): string {
  const at = address.lastIndexOf("@");
  const local = at < 0 ? address : address.slice(0, at);
  const tag = TAG.exec(local);
  if (!tag) throw new SrsError("not an SRS address");
  const rest = local.slice(5);
  const parts = rest.split("=");
  if (tag[1].toUpperCase() === "SRS1") {
    // SRS1=HHHH=host==HHHH=TT=domain=local → SRS0=HHHH=TT=domain=local@host
    const i = rest.indexOf("=");
    const j = i < 0 ? -1 : rest.indexOf("=", i + 1);
    if (i <= 0 || j < 0 || j === rest.length - 1) throw new SrsError("malformed SRS1 address");
    const srsHash = rest.slice(0, i);
    const srsHost = rest.slice(i + 1, j);
    const srsUser = rest.slice(j + 1);
    checkHash(srsHash, [srsHost, srsUser], opts);
    return `SRS0${srsUser}@${srsHost}`;
  }
  if (parts.length < 4 || !parts[0] || !parts[1] || !parts[2]) throw new SrsError("malformed SRS0 address");
  const [srsHash, stamp, host] = parts;
  const user = parts.slice(3).join("=");
  if (!user) throw new SrsError("malformed SRS0 address");
  checkTimestamp(stamp, opts);
  checkHash(srsHash, [stamp, host, user], opts);
  return `${user}@${host}`;
}
