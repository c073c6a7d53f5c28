/**
 * RFC 6125 §6 server identity check (as RFC 7672 §3.2.3 and RFC 8461 use it for SMTP): DNS-ID
 * subjectAltNames, CN-ID only when no DNS-ID is present, a wildcard only as the whole left-most label of a
 * name with at least three labels, case-insensitive, A-labels compared (RFC 5890), trailing dot ignored.
 * Pure functions; trusts nothing in the names it is given.
 */

import { parseIp } from "../core/ip.ts";

function sameIp(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Identifiers a certificate presents. */
export interface PresentedNames {
  /** subjectAltName dNSName values */
  dns: string[];
  /** Subject commonName values */
  cn: string[];
  /** subjectAltName iPAddress values, as text */
  ip?: string[];
}

/**
 * Reference name in canonical form: lower case, no trailing dot, U-labels converted to A-labels.
 * Undefined when it is not a usable host name.
 */
export function canonicalHostname(name: string): string | undefined {
  let n = name.trim().replace(/\.$/, "");
  if (n === "" || n.includes("*") || /[\s/?#@:[\]\\%]/.test(n)) return undefined;
  if (/[^\x00-\x7f]/.test(n)) {
    try {
      n = new URL(`http://${n}`).hostname; // IDNA (UTS #46) to A-labels
    } catch {
      return undefined;
    }
  }
  n = n.toLowerCase();
  if (!/^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(n)) return undefined;
  if (n.split(".").some((l) => l.length === 0 || l.length > 63)) return undefined;
  return n;
}

/** Presented identifier in canonical form (certificates must carry A-labels); undefined when unusable. */
function canonicalPresented(name: string): string | undefined {
  const n = name.replace(/\.$/, "").toLowerCase();
  if (n === "" || /[^\x21-\x7e]/.test(n)) return undefined;
  return n;
}

/** Whether one presented identifier (maybe a wildcard) matches one canonical reference name. */
export function matchesPresented(presented: string, reference: string): boolean {
  const p = canonicalPresented(presented);
  if (p === undefined) return false;
  if (!p.includes("*")) return p === reference;
  // Only "*" as the entire left-most label, and only once.
  if (!p.startsWith("*.") || p.indexOf("*", 1) !== -1) return false;
  const rest = p.slice(2);
  if (rest.split(".").length < 2 || rest.split(".").some((l) => l === "")) return false; // not "*.com"
  const dot = reference.indexOf(".");
  if (dot <= 0) return false;
  return reference.slice(dot + 1) === rest; // the wildcard covers exactly one non-empty label
}

/**
 * The suffix of an acceptable-name pattern `*.suffix` (a route's `tlsVerifyNames`) in canonical form, or
 * undefined when `name` is no such pattern. The suffix needs two labels at least: `*.com` is never a pattern.
 */
export function namePatternSuffix(name: string): string | undefined {
  if (!name.startsWith("*.")) return undefined;
  const rest = canonicalHostname(name.slice(2));
  return rest !== undefined && rest.includes(".") ? rest : undefined;
}

/**
 * Whether a presented identifier matches an acceptable-name pattern `*.suffix`: a plain name exactly one
 * label below the suffix, or the very same wildcard (which covers the same names; a wider one does not).
 */
function matchesPattern(presented: string, suffix: string): boolean {
  const p = canonicalPresented(presented);
  if (p === undefined) return false;
  if (p.includes("*")) return p === `*.${suffix}`;
  const dot = p.indexOf(".");
  return dot > 0 && p.slice(dot + 1) === suffix;
}

/**
 * Whether the certificate's names match any of the acceptable reference names. DNS-IDs when there are
 * any, otherwise CN-IDs. An acceptable name may also be a pattern `*.suffix` (see namePatternSuffix).
 */
export function checkHostname(names: PresentedNames, acceptable: string[]): boolean {
  const presented = names.dns.length > 0 ? names.dns : names.cn;
  for (const a of acceptable) {
    // An IP reference identity matches only an iPAddress SAN (RFC 6125 §1.7.2, RFC 5280 §4.2.1.6).
    const ip = parseIp(a.replace(/^\[|\]$/g, ""));
    if (ip) {
      if ((names.ip ?? []).some((p) => sameIp(parseIp(p), ip))) return true;
      continue;
    }
    const suffix = namePatternSuffix(a);
    if (suffix !== undefined) {
      if (presented.some((p) => matchesPattern(p, suffix))) return true;
      continue;
    }
    const ref = canonicalHostname(a);
    if (ref === undefined) continue;
    if (presented.some((p) => matchesPresented(p, ref))) return true;
  }
  return false;
}
