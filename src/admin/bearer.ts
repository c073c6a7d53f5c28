/**
 * Bearer-token check for the admin API (RFC 6750): `Authorization: Bearer <token>`, compared in constant time
 * (both sides hashed first, so length differences leak nothing). Only the header counts: the dashboard's
 * cookie is no credential for `/api` (a browser attaches cookies to cross-site form posts, and SameSite does
 * not tell loopback ports apart; a page cannot set the Authorization header cross-origin without a preflight
 * Ferry never grants). Request bodies must be `application/json` (415 otherwise), which no HTML form can send.
 */

import { createHash, timingSafeEqual } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import { jsonError } from "./http_error.ts";

/** The cookie the dashboard keeps the token in. */
export const TOKEN_COOKIE = "ferry_admin_token";

const digest = (s: string) => createHash("sha256").update(s).digest();

/** True when `given` equals one of `tokens`. */
export function tokenMatches(given: string, tokens: readonly string[]): boolean {
  const g = digest(given);
  let ok = false;
  for (const t of tokens) ok = timingSafeEqual(g, digest(t)) || ok;
  return ok;
}

/** The token in an `Authorization: Bearer` header. */
export function presentedToken(header: string | undefined): string | undefined {
  const m = header ? /^Bearer +([^\s]+)\s*$/i.exec(header) : null;
  return m?.[1];
}

/** True when the request carries a body (a non-zero Content-Length, or a chunked one). */
function hasBody(headers: Headers): boolean {
  const length = headers.get("content-length");
  if (length !== null) return length.trim() !== "0";
  return headers.has("transfer-encoding");
}

/**
 * Middleware refusing requests without a good bearer token (401 JSON with `WWW-Authenticate: Bearer`), and
 * requests whose body is not `application/json` (415).
 */
export function requireToken(tokens: readonly string[]): MiddlewareHandler {
  return async function bearer_token(c, next) {
    const given = presentedToken(c.req.header("authorization"));
    if (given === undefined || !tokenMatches(given, tokens)) {
      c.header("WWW-Authenticate", 'Bearer realm="ferry"');
      return jsonError(c, 401, given === undefined ? "missing bearer token" : "invalid bearer token");
    }
    if (hasBody(c.req.raw.headers)) {
      const type = c.req.header("content-type")?.split(";")[0].trim().toLowerCase();
      if (type !== "application/json") return jsonError(c, 415, "request body must be application/json");
    }
    await next();
  };
}
