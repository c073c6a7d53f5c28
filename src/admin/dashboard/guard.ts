/** Dashboard pages need the admin token in the HttpOnly cookie its login form sets; otherwise to the login page. */

import type { MiddlewareHandler } from "hono";
import { getCookie } from "hono/cookie";
import { TOKEN_COOKIE, tokenMatches } from "../bearer.ts";

/** Redirects to /dashboard/login without a good token cookie. */
export function dashboardGuard(tokens: readonly string[]): MiddlewareHandler {
  return async function dashboard_guard(c, next) {
    if (c.req.path === "/dashboard/login") return await next();
    const token = getCookie(c, TOKEN_COOKIE);
    if (token === undefined || !tokenMatches(token, tokens)) return c.redirect("/dashboard/login", 303);
    await next();
  };
}
