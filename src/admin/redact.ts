/**
 * The effective configuration as the admin API shows it: secrets replaced by "[redacted]" (passwords,
 * tokens, AUTH hashes), functions by "[function name]", everything else as validated (defaults filled in).
 */

const SECRET_KEYS = new Set(["password", "tokens", "secret", "users"]);

/** A JSON-safe copy of `value` with secrets redacted. */
export function redactConfig(value: unknown, key = ""): unknown {
  if (SECRET_KEYS.has(key) && value !== undefined) return "[redacted]";
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
