/**
 * Authentication-Results (RFC 8601): one header field with our authserv-id merging every check's method
 * results, and recognising fields that claim our authserv-id so they can be removed from incoming mail
 * (RFC 8601 5: a forged one would be trusted by our own users' software).
 */

/** Removes RFC 5322 comments (nested parentheses, quoted pairs). */
function stripComments(text: string): string {
  let out = "";
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === "\\" && depth > 0) {
      i++;
      continue;
    }
    if (ch === "(") depth++;
    else if (ch === ")" && depth > 0) depth--;
    else if (depth === 0) out += ch;
  }
  return out;
}

/** The authserv-id an Authentication-Results value names (lower case), or "" when it has none. */
export function authservIdOf(value: string): string {
  const head = stripComments(value).split(";")[0].trim();
  const id = head.split(/\s+/)[0] ?? "";
  return id.replace(/^"(.*)"$/, "$1").toLowerCase();
}

/** True when an Authentication-Results value claims `authservId` (case-insensitive, RFC 8601 2.5). */
export function claimsAuthservId(value: string, authservId: string): boolean {
  return authservIdOf(value) === authservId.toLowerCase();
}

/** The value of our Authentication-Results field: one method result per folded line, or `none`. */
export function authResultsValue(authservId: string, results: readonly string[]): string {
  if (results.length === 0) return `${authservId}; none`;
  return `${authservId};\r\n\t${results.join(";\r\n\t")}`;
}
