/**
 * The effective configuration as the admin API shows it: secrets replaced by "[redacted]", functions by
 * "[function name]", everything else as validated (defaults filled in). A secret is found by its key
 * (passwords, admin tokens, AUTH hashes, SRS secrets) or by its value: the userinfo of a URL
 * (`redis://:pw@host`) and anything holding a PEM private key are redacted wherever they appear.
 */

const SECRET_KEYS = new Set(["password", "passwords", "token", "tokens", "secret", "secrets", "users"]);

/** `scheme://userinfo@` at the start of a string. */
const URL_USERINFO = /^([a-z][a-z0-9+.-]*:\/\/)[^/?#\s]*@/i;

const PEM_PRIVATE_KEY = /-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----/;

function redactString(s: string): string {
  if (PEM_PRIVATE_KEY.test(s)) return "[redacted]";
  return s.replace(URL_USERINFO, "$1[redacted]@");
}

/** A JSON-safe copy of `value` with secrets redacted. */
export function redactConfig(value: unknown, key = ""): unknown {
  if (SECRET_KEYS.has(key) && value !== undefined) return "[redacted]";
  if (typeof value === "string") return redactString(value);
  if (typeof value === "function") return `[function ${value.name || "anonymous"}]`;
  if (Array.isArray(value)) return value.map((v) => redactConfig(v));
  if (value instanceof Uint8Array) return `[${value.length} octets]`;
  if (value && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = redactConfig(v, k);
    return out;
  }
  return value;
}
