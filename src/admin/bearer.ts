/**
 * Bearer-token check for the admin API (RFC 6750): `Authorization: Bearer <token>`, compared in constant time
 * (both sides hashed first, so length differences leak nothing). The dashboard may carry the token in an
 * HttpOnly cookie set by its login form.
 */

import { createHash, timingSafeEqual } from "node:crypto";
import type { MiddlewareHandler } from "hono";
import { getCookie } from "hono/cookie";
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

/** The presented token: the Authorization header, or the dashboard cookie. */
export function presentedToken(header: string | undefined, cookie: string | undefined): string | undefined {
  const m = header ? /^Bearer +([^\s]+)\s*$/i.exec(header) : null;
  return m?.[1] ?? cookie;
}

/** Middleware refusing requests without a good token: 401 JSON with `WWW-Authenticate: Bearer`. */
export function requireToken(tokens: readonly string[]): MiddlewareHandler {
  return async function bearer_token(c, next) {
    const given = presentedToken(c.req.header("authorization"), getCookie(c, TOKEN_COOKIE));
    if (given === undefined || !tokenMatches(given, tokens)) {
      c.header("WWW-Authenticate", 'Bearer realm="ferry"');
      return jsonError(c, 401, given === undefined ? "missing bearer token" : "invalid bearer token");
    }
    await next();
  };
}
